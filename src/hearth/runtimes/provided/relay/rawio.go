package main

import (
	"io"
	"net"
	"sync"
	"syscall"
	"unsafe"
)

// rawFD reads and writes a non-blocking descriptor that Go's poller watches (a socket, a pipe, the
// VM's serial port) with syscall.RawSyscall inside syscall.RawConn's callbacks, waiting in the poller
// on EAGAIN as Go's own I/O does. Go's Read and Write enter the scheduler's syscall state, and the
// first such entry after the process was idle wakes the runtime's sysmon thread (a futex wake-up, then
// a few 20 µs sleeps): the relay goes idle and busy twice per invocation. A non-blocking call never
// blocks, so it needs none of that.
type rawFD struct {
	rc syscall.RawConn

	rbuf  []byte // only the one reading goroutine of a descriptor uses the read side
	rn    int
	rerr  syscall.Errno
	readF func(fd uintptr) bool

	wmu    sync.Mutex
	wbuf   []byte
	werr   syscall.Errno
	writeF func(fd uintptr) bool
}

// newRawIO is conn's descriptor as a rawFD when it is non-blocking, else conn itself (e.g. an
// inherited blocking descriptor, which Go reads with blocking system calls).
func newRawIO(conn interface{}) io.ReadWriter {
	fallback, _ := conn.(io.ReadWriter)
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return fallback
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return fallback
	}
	nonblocking := false
	_ = rc.Control(func(fd uintptr) {
		flags, _, errno := syscall.RawSyscall(syscall.SYS_FCNTL, fd, syscall.F_GETFL, 0)
		nonblocking = errno == 0 && flags&syscall.O_NONBLOCK != 0
	})
	if !nonblocking {
		return fallback
	}
	f := &rawFD{rc: rc}
	f.readF = f.readOnce
	f.writeF = f.writeAll
	return f
}

func (f *rawFD) readOnce(fd uintptr) bool {
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&f.rbuf[0])), uintptr(len(f.rbuf)))
		switch errno {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		f.rn, f.rerr = int(n), errno
		return true
	}
}

func (f *rawFD) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	f.rbuf = p
	err := f.rc.Read(f.readF)
	f.rbuf = nil
	switch {
	case err != nil:
		return 0, err
	case f.rerr != 0:
		return 0, f.rerr
	case f.rn == 0:
		return 0, io.EOF
	}
	return f.rn, nil
}

func (f *rawFD) writeAll(fd uintptr) bool {
	for len(f.wbuf) > 0 {
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&f.wbuf[0])), uintptr(len(f.wbuf)))
		switch errno {
		case 0:
			f.wbuf = f.wbuf[n:]
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			f.werr = errno
			return true
		}
	}
	return true
}

func (f *rawFD) Write(p []byte) (int, error) {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	f.wbuf, f.werr = p, 0
	err := f.rc.Write(f.writeF)
	written := len(p) - len(f.wbuf)
	f.wbuf = nil
	if err == nil && f.werr != 0 {
		err = f.werr
	}
	return written, err
}

// readNonblocking reads what a non-blocking descriptor holds now (n <= 0: nothing, or its end).
func readNonblocking(fd uintptr, buf []byte) int {
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
		if errno == syscall.EINTR {
			continue
		}
		if errno != 0 {
			return -1
		}
		return int(n)
	}
}

type pollFd struct {
	fd      int32
	events  int16
	revents int16
}

const (
	pollIn  = 0x1
	pollErr = 0x8
	pollHup = 0x10
)

var zeroTimeout syscall.Timespec

// readable polls descriptors once without waiting (one system call for all); ready[i] is true for
// those with data or at their end. ok is false when the poll itself failed.
func readable(fds []int, ready []bool) bool {
	var set [4]pollFd
	if len(fds) > len(set) {
		return false
	}
	for i, fd := range fds {
		set[i] = pollFd{fd: int32(fd), events: pollIn}
	}
	for {
		_, _, errno := syscall.RawSyscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&set[0])), uintptr(len(fds)),
			uintptr(unsafe.Pointer(&zeroTimeout)), 0, 0, 0)
		if errno == syscall.EINTR {
			continue
		}
		if errno != 0 {
			return false
		}
		break
	}
	for i := range fds {
		ready[i] = set[i].revents&(pollIn|pollErr|pollHup) != 0
	}
	return true
}

// closeWrite half-closes a TCP connection (its peer reads the end of our data), if it is one.
func closeWrite(conn net.Conn) {
	if tcp, ok := conn.(*net.TCPConn); ok {
		_ = tcp.CloseWrite()
	}
}
