package main

// The Runtime API's HTTP/1.1 server is written by hand rather than with net/http: the API is four
// fixed routes for one client (the runtime, mostly over one keep-alive connection), and net/http's
// per-request machinery (a goroutine reading in the background, a context, header maps, deadline
// timers, layered buffered writers) cost more CPU per invocation than everything else the relay
// does. This server keeps what a runtime may rely on, with net/http's answers: keep-alive (HTTP/1.1;
// HTTP/1.0 with `Connection: keep-alive`), Content-Length and chunked request bodies (trailers
// included), `Expect: 100-continue`, a 30 s limit on reading a request's head, an unread body
// discarded (up to 256 KiB) or the connection closed, and 400 / 417 / 431 / 501 / 505 with
// `Connection: close` for requests it cannot take. It also lets the relay's host-frame loop write
// an invocation straight to the connection whose `next` waits (relay.dispatch), with no hand-off.

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/url"
	"strconv"
	"sync"
	"time"
)

const (
	maxHeadBytes       = 1<<20 + 4096 // net/http's DefaultMaxHeaderBytes and its slack
	maxDiscardBytes    = 256 << 10    // net/http's maxPostHandlerReadBytes
	maxChunkLineBytes  = 4096
	readHeadTimeout    = 30 * time.Second
	closeLingerTimeout = 500 * time.Millisecond // net/http's rstAvoidanceDelay
)

var statusText = map[int]string{
	100: "Continue", 200: "OK", 202: "Accepted", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
	405: "Method Not Allowed", 413: "Request Entity Too Large", 417: "Expectation Failed",
	431: "Request Header Fields Too Large", 501: "Not Implemented", 505: "HTTP Version Not Supported",
}

// headError is a request the server answers itself and then closes the connection (net/http's texts).
type headError struct {
	status int
	text   string // after "<status> <reason>: "; "" for the bare status line
}

func (e *headError) Error() string { return e.text }

func badRequest(text string) *headError { return &headError{400, text} }

var errBadRequest = &headError{400, ""} // what net/http says of most malformed heads, without a reason

var (
	errHeadTooLarge  = &headError{431, ""}
	errUnsupportedTE = &headError{501, "Unsupported transfer encoding"}
	errMalformedBody = errors.New("malformed chunked encoding")
	errAnswered      = errors.New("answered and closed")
)

// request is the head of the request being served, and where its body stands.
type request struct {
	method     string
	path       string // decoded, as net/url's URL.Path
	http10     bool
	close      bool // the connection ends after the answer
	keepAlive  bool // an HTTP/1.0 request asked for keep-alive
	expect100  bool
	sent100    bool
	chunked    bool
	remaining  int64 // Content-Length bytes left, or the current chunk's
	bodyDone   bool
	bodyErr    error
	errorType  string // Lambda-Runtime-Function-Error-Type
	trailerErr string // the same, and -Body, as trailers of a chunked body
	trailerMsg string
}

type httpConn struct {
	r          *relay
	nc         net.Conn
	rw         io.ReadWriter
	buf        []byte // buf[start:end] is read and not yet consumed
	start, end int
	out        []byte
	req        request

	// Guarded by relay.mu: this connection's `next` waits (relay.waiter), or its answer is being
	// written by another goroutine; a request arriving meanwhile waits for that (HTTP answers in order).
	writing bool
	stalled bool
	wake    chan struct{}
	nextReq request // the waiting `next` (its connection flags: the answer may be written from elsewhere)
}

func (r *relay) acceptLoop(listener net.Listener) {
	var delay time.Duration
	for {
		nc, err := listener.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) { // as net/http: back off, go on
				if delay = delay*2 + 5*time.Millisecond; delay > time.Second {
					delay = time.Second
				}
				time.Sleep(delay)
				continue
			}
			return
		}
		delay = 0
		c := &httpConn{r: r, nc: nc, rw: newRawIO(nc), buf: make([]byte, 16<<10), wake: make(chan struct{}, 1)}
		go c.serve()
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

func (c *httpConn) serve() {
	for {
		if err := c.readHead(); err != nil {
			c.gone()
			var he *headError
			if errors.As(err, &he) {
				c.failHead(he)
			}
			c.nc.Close()
			return
		}
		c.awaitAnswer()
		c.r.serveAPI(c)
		if c.waiting() {
			if c.nextReq.close { // answered (and half-closed) by the dispatcher; wait for the runtime to hang up
				c.drainUntilGone()
				return
			}
			continue // read on: the runtime hanging up cancels the wait, as net/http's background read did
		}
		if c.req.close {
			if c.req.bodyDone {
				c.nc.Close()
			} else {
				c.lingerClose()
			}
			return
		}
	}
}

// waiting is whether this connection's `next` waits for work or for its answer to be written.
func (c *httpConn) waiting() bool {
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	return c.r.waiter == c || c.writing
}

// awaitAnswer holds a request that came before this connection's pending `next` was answered.
func (c *httpConn) awaitAnswer() {
	c.r.mu.Lock()
	if c.r.waiter != c && !c.writing {
		c.r.mu.Unlock()
		return
	}
	c.stalled = true
	c.r.mu.Unlock()
	<-c.wake
}

// gone is the runtime's end of the connection closing (or failing): a `next` waiting on it stops.
func (c *httpConn) gone() {
	c.r.mu.Lock()
	if c.r.waiter == c {
		c.r.waiter = nil
	}
	if c.writing {
		c.stalled = true
		c.r.mu.Unlock()
		<-c.wake
		return
	}
	c.r.mu.Unlock()
}

// answered is called by whoever wrote this connection's `next` answer.
func (c *httpConn) answered() {
	c.r.mu.Lock()
	c.writing = false
	stalled := c.stalled
	c.stalled = false
	c.r.mu.Unlock()
	if stalled {
		c.wake <- struct{}{}
	}
}

func (c *httpConn) drainUntilGone() {
	var scratch [512]byte
	for {
		if _, err := c.rw.Read(scratch[:]); err != nil {
			c.gone()
			c.nc.Close()
			return
		}
	}
}

// lingerClose closes after an answer as net/http does: half-close, then read what the runtime still
// sends for a moment, so that its unread body does not turn our answer into a reset.
func (c *httpConn) lingerClose() {
	closeWrite(c.nc)
	_ = c.nc.SetReadDeadline(time.Now().Add(closeLingerTimeout))
	var scratch [4096]byte
	for {
		if _, err := c.nc.Read(scratch[:]); err != nil {
			break
		}
	}
	c.nc.Close()
}

func (c *httpConn) failHead(he *headError) {
	reason := statusText[he.status]
	line := strconv.Itoa(he.status) + " " + reason
	if he.text != "" && he.status != 501 {
		line += ": " + he.text
	}
	body := line
	if he.status == 501 {
		body = he.text
	}
	_, _ = io.WriteString(c.rw, "HTTP/1.1 "+line+"\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"+body)
	if he.status == 431 {
		c.lingerClose()
	}
}

// ------------------------------------------------------------------------------------ reading

// fill reads more into the buffer, growing it up to limit (0: no growth, only compaction).
func (c *httpConn) fill(limit int) error {
	if c.start == c.end {
		c.start, c.end = 0, 0
	}
	if c.end == len(c.buf) {
		switch {
		case c.start > 0:
			c.end = copy(c.buf, c.buf[c.start:c.end])
			c.start = 0
		case len(c.buf) < limit:
			grown := make([]byte, min(2*len(c.buf), limit))
			c.end = copy(grown, c.buf[c.start:c.end])
			c.buf = grown
		default:
			return errHeadTooLarge
		}
	}
	n, err := c.rw.Read(c.buf[c.end:])
	c.end += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

func min(a, b int) int {
	if a < b {
		return a
	}
	return b
}

// headEnd is where the head in b ends (after its empty line), or -1.
func headEnd(b []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		if j == 0 || (j == 1 && b[i] == '\r') {
			return i + j + 1
		}
		i += j + 1
	}
}

func (c *httpConn) readHead() error {
	deadline := false
	for {
		if end := headEnd(c.buf[c.start:c.end]); end >= 0 {
			if deadline {
				_ = c.nc.SetReadDeadline(time.Time{})
			}
			head := c.buf[c.start : c.start+end]
			c.start += end
			return c.parseHead(head)
		}
		if c.start < c.end && !deadline { // a head that came in parts: bound the time it may take
			_ = c.nc.SetReadDeadline(time.Now().Add(readHeadTimeout))
			deadline = true
		}
		if err := c.fill(maxHeadBytes); err != nil {
			if err == io.EOF && c.start < c.end { // cut off within a head
				return errBadRequest
			}
			return err
		}
	}
}

func nextLine(b []byte) (line, rest []byte) {
	i := bytes.IndexByte(b, '\n')
	line, rest = b[:i], b[i+1:]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, rest
}

func (c *httpConn) parseHead(head []byte) error {
	c.req = request{}
	req := &c.req
	line, rest := nextLine(head)
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 < 0 {
		return errBadRequest
	}
	sp2 := bytes.IndexByte(line[sp1+1:], ' ')
	if sp2 < 0 {
		return errBadRequest
	}
	method, target, proto := line[:sp1], line[sp1+1:sp1+1+sp2], line[sp1+2+sp2:]
	if len(method) == 0 || !isToken(method) {
		return errBadRequest
	}
	if len(proto) != 8 || string(proto[:7]) != "HTTP/1." || proto[7] < '0' || proto[7] > '9' {
		if len(proto) == 8 && string(proto[:5]) == "HTTP/" && proto[5] >= '0' && proto[5] <= '9' && proto[6] == '.' &&
			proto[7] >= '0' && proto[7] <= '9' {
			return &headError{505, "unsupported protocol version"}
		}
		return errBadRequest
	}
	req.http10 = proto[7] == '0'
	switch string(method) { // the usual ones without an allocation
	case "GET":
		req.method = "GET"
	case "POST":
		req.method = "POST"
	default:
		req.method = string(method)
	}
	path, err := requestPath(target)
	if err != nil {
		return errBadRequest
	}
	req.path = path
	var contentLength []byte
	hosts, encodings := 0, 0
	chunked, expect := false, []byte(nil)
	for len(rest) > 0 {
		line, rest = nextLine(rest)
		if len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			return badRequest("invalid header name")
		}
		name, value := line[:colon], bytes.Trim(line[colon+1:], " \t")
		if !validValue(value) {
			return badRequest("invalid header value")
		}
		switch {
		case equalFold(name, "content-length"):
			if contentLength != nil && !bytes.Equal(contentLength, value) {
				return errBadRequest
			}
			contentLength = value
		case equalFold(name, "transfer-encoding"):
			encodings++
			chunked = equalFold(value, "chunked")
		case equalFold(name, "connection"):
			req.close = req.close || hasToken(value, "close")
			req.keepAlive = req.keepAlive || hasToken(value, "keep-alive")
		case equalFold(name, "expect"):
			expect = value
		case equalFold(name, "host"):
			hosts++
		case equalFold(name, "lambda-runtime-function-error-type"):
			if req.errorType == "" {
				req.errorType = string(value)
			}
		}
	}
	if hosts == 0 && !req.http10 {
		return badRequest("missing required Host header")
	}
	if hosts > 1 {
		return errBadRequest
	}
	if req.http10 && !req.keepAlive {
		req.close = true
	}
	switch {
	case encodings > 0 && !req.http10: // HTTP/1.0's Transfer-Encoding is ignored, as by net/http
		if encodings > 1 || !chunked {
			return errUnsupportedTE
		}
		req.chunked = true
	case len(contentLength) > 0: // an empty one is none, as for net/http
		n, err := strconv.ParseUint(string(contentLength), 10, 63)
		if err != nil {
			return errBadRequest
		}
		req.remaining = int64(n)
	}
	req.bodyDone = !req.chunked && req.remaining == 0
	if expect != nil {
		if !hasToken(expect, "100-continue") {
			return c.expectationFailed()
		}
		req.expect100 = !req.http10 && !req.bodyDone
	}
	return nil
}

// expectationFailed answers an Expect other than 100-continue: 417, then the connection closes.
func (c *httpConn) expectationFailed() error {
	c.req.close, c.req.bodyDone = true, true
	c.respond(417, nil)
	c.lingerClose()
	return errAnswered
}

// requestPath is the request target's path, decoded (net/url for anything but a plain absolute path).
func requestPath(target []byte) (string, error) {
	plain := len(target) > 0 && target[0] == '/'
	for _, b := range target {
		if b == '%' || b == '?' || b < 0x21 || b == 0x7f {
			plain = false
			break
		}
	}
	if plain {
		return string(target), nil
	}
	parsed, err := url.ParseRequestURI(string(target))
	if err != nil {
		return "", err
	}
	return parsed.Path, nil
}

var notToken = func() (table [256]bool) {
	for ch := 0; ch < 256; ch++ {
		table[ch] = ch <= ' ' || ch >= 0x7f || bytes.IndexByte([]byte(`"(),/:;<=>?@[\]{}`), byte(ch)) >= 0
	}
	return table
}()

func isToken(b []byte) bool {
	for _, ch := range b {
		if notToken[ch] {
			return false
		}
	}
	return true
}

func validValue(b []byte) bool {
	for _, ch := range b {
		if (ch < ' ' && ch != '\t') || ch == 0x7f {
			return false
		}
	}
	return true
}

// equalFold compares b with lower, a lower-case ASCII string, ignoring case.
func equalFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i, ch := range b {
		if 'A' <= ch && ch <= 'Z' {
			ch += 'a' - 'A'
		}
		if ch != lower[i] {
			return false
		}
	}
	return true
}

// hasToken is whether the comma-separated list v holds token (lower-case), ignoring case.
func hasToken(v []byte, token string) bool {
	for len(v) > 0 {
		item := v
		if i := bytes.IndexByte(v, ','); i >= 0 {
			item, v = v[:i], v[i+1:]
		} else {
			v = nil
		}
		if equalFold(bytes.Trim(item, " \t"), token) {
			return true
		}
	}
	return false
}

// ------------------------------------------------------------------------------------ bodies

// readBody reads the request's body up to max bytes (less if it ends first), as
// io.ReadAll(io.LimitReader(body, max)) would.
func (c *httpConn) readBody(max int) ([]byte, error) {
	req := &c.req
	if req.bodyDone || max <= 0 {
		return []byte{}, req.bodyErr
	}
	c.continue100()
	if !req.chunked {
		want := req.remaining
		if want > int64(max) {
			want = int64(max)
		}
		body := make([]byte, want)
		n, err := c.readFull(body)
		req.remaining -= int64(n)
		req.bodyDone = req.remaining == 0
		return body[:n], err
	}
	var body []byte
	for len(body) < max && !req.bodyDone && req.bodyErr == nil {
		if req.remaining == 0 {
			c.nextChunk()
			continue
		}
		want := req.remaining
		if room := int64(max - len(body)); want > room {
			want = room
		}
		body = growBy(body, int(want))
		n, err := c.readFull(body[len(body)-int(want):])
		body = body[:len(body)-int(want)+n]
		req.remaining -= int64(n)
		if err != nil {
			break
		}
		if req.remaining == 0 {
			c.endChunk()
		}
	}
	return body, req.bodyErr
}

func growBy(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b[:len(b)+n]
	}
	grown := make([]byte, len(b)+n, 2*cap(b)+n)
	copy(grown, b)
	return grown
}

// continue100 sends `100 Continue` before the body is first read, if the runtime waits for it.
func (c *httpConn) continue100() {
	if c.req.expect100 && !c.req.sent100 {
		c.req.sent100 = true
		_, _ = io.WriteString(c.rw, "HTTP/1.1 100 Continue\r\n\r\n")
	}
}

// readFull fills p from the buffer, then straight from the connection; an early end is an error.
func (c *httpConn) readFull(p []byte) (int, error) {
	n := copy(p, c.buf[c.start:c.end])
	c.start += n
	for n < len(p) {
		m, err := c.rw.Read(p[n:])
		n += m
		if err != nil || m == 0 {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			c.req.bodyErr = err
			return n, err
		}
	}
	return n, nil
}

// line reads one line (without its line ending) of a chunked body's framing.
func (c *httpConn) line() ([]byte, error) {
	for {
		if i := bytes.IndexByte(c.buf[c.start:c.end], '\n'); i >= 0 {
			if i >= maxChunkLineBytes {
				return nil, errors.New("header line too long")
			}
			line := c.buf[c.start : c.start+i]
			c.start += i + 1
			return bytes.TrimSuffix(line, []byte("\r")), nil
		}
		if c.end-c.start >= maxChunkLineBytes {
			return nil, errors.New("header line too long")
		}
		if err := c.fill(len(c.buf)); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// nextChunk reads a chunk's size line; the last chunk's trailers end the body.
func (c *httpConn) nextChunk() {
	req := &c.req
	line, err := c.line()
	if err != nil {
		req.bodyErr = err
		return
	}
	line = bytes.TrimRight(line, " \t")
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = bytes.TrimRight(line[:i], " \t")
	}
	size, err := parseHex(line)
	if err != nil {
		req.bodyErr = err
		return
	}
	req.remaining = size
	if size == 0 {
		req.bodyErr = c.readTrailers()
		req.bodyDone = req.bodyErr == nil
	}
}

func parseHex(v []byte) (int64, error) {
	if len(v) == 0 {
		return 0, errors.New("empty hex number for chunk length")
	}
	var n int64
	for i, b := range v {
		switch {
		case '0' <= b && b <= '9':
			b -= '0'
		case 'a' <= b && b <= 'f':
			b = b - 'a' + 10
		case 'A' <= b && b <= 'F':
			b = b - 'A' + 10
		default:
			return 0, errors.New("invalid byte in chunk length")
		}
		if i == 16 {
			return 0, errors.New("http chunk length too large")
		}
		n = n<<4 | int64(b)
	}
	if n < 0 {
		return 0, errors.New("http chunk length too large")
	}
	return n, nil
}

// endChunk reads the line ending after a chunk's data.
func (c *httpConn) endChunk() {
	for c.end-c.start < 2 {
		if err := c.fill(len(c.buf)); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			c.req.bodyErr = err
			return
		}
	}
	if c.buf[c.start] != '\r' || c.buf[c.start+1] != '\n' {
		c.req.bodyErr = errMalformedBody
		return
	}
	c.start += 2
}

func (c *httpConn) readTrailers() error {
	for {
		line, err := c.line()
		if err != nil {
			return err
		}
		if len(line) == 0 {
			return nil
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return errors.New("malformed MIME header line: " + string(line))
		}
		name, value := line[:colon], bytes.Trim(line[colon+1:], " \t")
		switch {
		case equalFold(name, "lambda-runtime-function-error-type") && c.req.trailerErr == "":
			c.req.trailerErr = string(value)
		case equalFold(name, "lambda-runtime-function-error-body") && c.req.trailerMsg == "":
			c.req.trailerMsg = string(value)
		}
	}
}

// finishBody leaves the connection at the next request: the rest of an unread body is discarded if
// small, else (or if the runtime still waits for `100 Continue`) the connection closes after the answer.
func (c *httpConn) finishBody() {
	req := &c.req
	if req.bodyDone {
		return
	}
	if req.bodyErr != nil || (req.expect100 && !req.sent100) {
		req.close = true
		return
	}
	for left := maxDiscardBytes + 1; left > 0 && !req.bodyDone && req.bodyErr == nil; {
		body, _ := c.readBody(min(left, 64<<10))
		left -= len(body)
	}
	if !req.bodyDone {
		req.close = true
	}
}

// ------------------------------------------------------------------------------------ answers

var dateCache struct {
	sync.Mutex
	second int64
	value  []byte
}

// appendDate appends the Date header's value (formatted once per second).
func appendDate(b []byte) []byte {
	now := time.Now()
	dateCache.Lock()
	if second := now.Unix(); second != dateCache.second || dateCache.value == nil {
		dateCache.second = second
		dateCache.value = now.UTC().AppendFormat(dateCache.value[:0], "Mon, 02 Jan 2006 15:04:05 GMT")
	}
	b = append(b, dateCache.value...)
	dateCache.Unlock()
	return b
}

// appendStatus starts a response: its status line (in the request's HTTP version, as net/http).
func appendStatus(b []byte, http10 bool, status int) []byte {
	if http10 {
		b = append(b, "HTTP/1.0 "...)
	} else {
		b = append(b, "HTTP/1.1 "...)
	}
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, statusText[status]...)
	return append(b, "\r\n"...)
}

// appendCommon ends a response's head with the headers every answer has.
func appendCommon(b []byte, length int, close, keepAlive10 bool) []byte {
	if length > 0 {
		b = append(b, "Content-Type: application/json\r\n"...)
	}
	b = append(b, "Date: "...)
	b = appendDate(b)
	b = append(b, "\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(length), 10)
	switch {
	case close:
		b = append(b, "\r\nConnection: close"...)
	case keepAlive10:
		b = append(b, "\r\nConnection: keep-alive"...)
	}
	return append(b, "\r\n\r\n"...)
}

// connectionHeader is what an answer says of the connection: close (HTTP/1.1 closing; HTTP/1.0
// closes without saying so), or keep-alive (HTTP/1.0 asking for it).
func connectionHeader(req *request) (close, keepAlive10 bool) {
	if req.http10 {
		return false, !req.close
	}
	return req.close, false
}

// respond answers the request being served with a JSON body.
func (c *httpConn) respond(status int, body []byte) {
	c.finishBody()
	req := &c.req
	close, keepAlive10 := connectionHeader(req)
	b := appendCommon(appendStatus(c.out[:0], req.http10, status), len(body), close, keepAlive10)
	if req.method != "HEAD" {
		b = append(b, body...)
	}
	c.keepOut(b)
	if _, err := c.rw.Write(b); err != nil {
		req.close = true
	}
}

// keepOut keeps the answer buffer for the next one, unless a large body made it large.
func (c *httpConn) keepOut(b []byte) {
	if cap(b) <= 256<<10 {
		c.out = b
	} else {
		c.out = nil
	}
}
