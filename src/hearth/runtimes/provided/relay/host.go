package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
)

// dialHost connects to the host the way the sandbox offers: a descriptor the microVM's supervisor
// accepted on vsock (HEARTH_AGENT_FD, Firecracker), a virtio-serial port (HEARTH_AGENT_PORT, QEMU), or
// the Unix socket bind-mounted into a container (HEARTH_AGENT_SOCKET), as the Python agent does.
func dialHost() (net.Conn, error) {
	if value := os.Getenv("HEARTH_AGENT_FD"); value != "" {
		fd, err := strconv.Atoi(value)
		if err != nil {
			return nil, fmt.Errorf("HEARTH_AGENT_FD=%q is not a descriptor", value)
		}
		return fileConn{os.NewFile(uintptr(fd), "host")}, nil
	}
	if port := os.Getenv("HEARTH_AGENT_PORT"); port != "" {
		file, err := os.OpenFile(port, os.O_RDWR|syscall.O_NOCTTY, 0)
		if err != nil {
			return nil, err
		}
		return fileConn{file}, nil
	}
	return net.Dial("unix", getenv("HEARTH_AGENT_SOCKET", "/hearth/agent.sock"))
}

// fileConn is a character device or an inherited socket as a net.Conn (only Read, Write and Close are used).
type fileConn struct{ *os.File }

type hostAddr struct{}

func (hostAddr) Network() string { return "host" }
func (hostAddr) String() string  { return "host" }

func (fileConn) LocalAddr() net.Addr  { return hostAddr{} }
func (fileConn) RemoteAddr() net.Addr { return hostAddr{} }
