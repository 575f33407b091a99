package main

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// codeFile is one entry of an init frame's `files` (microVMs share no directory with the host:
// docs/protocol.md): an absolute path without `..`, base64 content and a mode.
type codeFile struct {
	Path string `json:"path"`
	Data string `json:"data"`
	Mode uint32 `json:"mode"`
}

// writeFiles writes the function's code before its runtime starts, as the Python and JS agents do.
func writeFiles(files []codeFile) error {
	for _, f := range files {
		if !strings.HasPrefix(f.Path, "/") || strings.Contains("/"+f.Path+"/", "/../") {
			return fmt.Errorf("invalid file path %q", f.Path)
		}
		data, err := base64.StdEncoding.DecodeString(f.Data)
		if err != nil {
			return fmt.Errorf("%s: %w", f.Path, err)
		}
		if err := os.MkdirAll(filepath.Dir(f.Path), 0o755); err != nil {
			return err
		}
		mode := os.FileMode(f.Mode & 0o755)
		if f.Mode == 0 {
			mode = 0o644
		}
		if err := os.WriteFile(f.Path, data, mode); err != nil {
			return err
		}
	}
	return nil
}
