// A custom runtime for Hearth's tests: the Lambda Runtime API loop, Go standard library only.
// What it does for an invocation depends on the event (see the test file); by default it echoes the
// event and the invocation's headers and environment.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

var api = "http://" + os.Getenv("AWS_LAMBDA_RUNTIME_API") + "/2018-06-01/runtime"

// lastPost remembers the status and body of the previous invocation's POST, so that the next
// invocation can report what the Runtime API answered (e.g. 413 to a response over the limit).
var lastPost map[string]interface{}

func post(url, contentType string, body io.Reader, header map[string]string) (int, string) {
	req, _ := http.NewRequest(http.MethodPost, url, body)
	req.Header.Set("Content-Type", contentType)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(text)
}

func main() {
	if msg := os.Getenv("GO_INIT_ERROR"); msg != "" {
		fmt.Println("init is failing on purpose")
		body := fmt.Sprintf(`{"errorMessage":%q,"errorType":"GoInitError","stackTrace":["main.go:init"]}`, msg)
		status, text := post(api+"/init/error", "application/json", strings.NewReader(body), map[string]string{"Lambda-Runtime-Function-Error-Type": "GoInitError"})
		fmt.Fprintf(os.Stderr, "init/error answered %d %s\n", status, text)
		os.Exit(1)
	}
	switch os.Getenv("HOSTILE") {
	case "idle": // never asks for work
		fmt.Println("not asking for work")
		for {
			time.Sleep(time.Hour)
		}
	case "flood": // hammers the Runtime API from many goroutines while the loop below serves
		for i := 0; i < 32; i++ {
			go flood(i)
		}
	}
	for {
		resp, err := http.Get(api + "/invocation/next")
		if err != nil {
			fmt.Fprintln(os.Stderr, "next failed:", err)
			os.Exit(2)
		}
		event, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		handle(resp.Header, event)
	}
}

func handle(h http.Header, raw []byte) {
	id := h.Get("Lambda-Runtime-Aws-Request-Id")
	respond := api + "/invocation/" + id + "/response"
	var event map[string]interface{}
	_ = json.Unmarshal(raw, &event)
	fmt.Println("go got", id)
	fmt.Fprintln(os.Stderr, "go err", id)
	switch {
	case event["error"] != nil:
		body := `{"errorMessage":"the event asked for an error","errorType":"GoError","stackTrace":["main.go:handle","main.go:main"]}`
		status, text := post(api+"/invocation/"+id+"/error", "application/json", strings.NewReader(body), map[string]string{"Lambda-Runtime-Function-Error-Type": "GoError"})
		lastPost = map[string]interface{}{"status": status, "body": text}
		return
	case event["exit"] != nil:
		os.Exit(int(event["exit"].(float64)))
	case event["sleep_ms"] != nil:
		time.Sleep(time.Duration(event["sleep_ms"].(float64)) * time.Millisecond)
	case event["big"] != nil:
		n := int(event["big"].(float64))
		body := append(append([]byte(`"`), bytes.Repeat([]byte("x"), n)...), '"')
		status, text := post(respond, "application/json", bytes.NewReader(body), nil)
		lastPost = map[string]interface{}{"status": status, "body": text}
		return
	case event["chunked"] != nil: // a streamed response: chunked transfer encoding, no length known
		n := int(event["chunked"].(float64))
		pr, pw := io.Pipe()
		go func() {
			pw.Write([]byte(`{"chunks":[`))
			for i := 0; i < n; i++ {
				if i > 0 {
					pw.Write([]byte(","))
				}
				pw.Write([]byte(fmt.Sprintf("%d", i)))
				time.Sleep(time.Millisecond)
			}
			pw.Write([]byte("]}"))
			pw.Close()
		}()
		status, text := post(respond, "application/json", pr, map[string]string{"Lambda-Runtime-Function-Response-Mode": "streaming"})
		lastPost = map[string]interface{}{"status": status, "body": text}
		return
	case event["wrong_id"] != nil:
		status, text := post(api+"/invocation/not-"+id+"/response", "application/json", strings.NewReader(`"wrong"`), nil)
		nextStatus, nextBody := 0, ""
		if again, err := http.Get(api + "/invocation/next"); err == nil { // more work before answering
			body, _ := io.ReadAll(again.Body)
			again.Body.Close()
			nextStatus, nextBody = again.StatusCode, string(body)
		}
		report, _ := json.Marshal(map[string]interface{}{
			"wrong_status": status, "wrong_body": text, "next_status": nextStatus, "next_body": nextBody,
		})
		post(respond, "application/json", bytes.NewReader(report), nil)
		return
	}
	env := map[string]string{}
	for _, key := range []string{"AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_VERSION", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "_HANDLER", "LAMBDA_TASK_ROOT", "GREETING", "HEARTH_AGENT_SOCKET"} {
		if value, ok := os.LookupEnv(key); ok {
			env[key] = value
		}
	}
	out, _ := json.Marshal(map[string]interface{}{
		"event":          json.RawMessage(raw),
		"request_id":     id,
		"deadline_ms":    h.Get("Lambda-Runtime-Deadline-Ms"),
		"arn":            h.Get("Lambda-Runtime-Invoked-Function-Arn"),
		"trace":          h.Get("Lambda-Runtime-Trace-Id"),
		"client_context": h.Get("Lambda-Runtime-Client-Context"),
		"now_ms":         time.Now().UnixMilli(),
		"env":            env,
		"pid":            os.Getpid(),
		"uid":            os.Getuid(),
		"last_post":      lastPost,
	})
	status, text := post(respond, "application/json", bytes.NewReader(out), nil)
	lastPost = map[string]interface{}{"status": status, "body": text}
}

func flood(i int) {
	client := &http.Client{Timeout: 20 * time.Millisecond}
	for n := 0; ; n++ {
		var resp *http.Response
		switch n % 3 {
		case 0:
			resp, _ = client.Get(api + "/invocation/next")
		case 1:
			resp, _ = client.Post(api+fmt.Sprintf("/invocation/bogus-%d-%d/response", i, n), "application/json", strings.NewReader("{}"))
		default:
			resp, _ = client.Get(api + "/../../etc/passwd")
		}
		if resp != nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
}
