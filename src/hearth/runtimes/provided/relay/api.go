package main

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

var accepted = []byte(`{"status":"OK"}`)

func (c *httpConn) renderError(status int, errorType, message string) {
	body, _ := json.Marshal(map[string]string{"errorMessage": message, "errorType": errorType})
	c.respond(status, body)
}

func (r *relay) serveAPI(c *httpConn) {
	method, path := c.req.method, c.req.path
	if !strings.HasPrefix(path, prefix) {
		c.renderError(404, "NotFound", "unknown path "+path+" (the Runtime API is under "+prefix+")")
		return
	}
	rest := path[len(prefix):]
	switch {
	case rest == "invocation/next":
		if method != "GET" {
			c.renderError(405, "MethodNotAllowed", "use GET")
			return
		}
		r.next(c)
	case rest == "init/error":
		if method != "POST" {
			c.renderError(405, "MethodNotAllowed", "use POST")
			return
		}
		r.postInitError(c)
	case strings.HasPrefix(rest, "invocation/"):
		id, verb, ok := strings.Cut(rest[len("invocation/"):], "/")
		if !ok || strings.Contains(verb, "/") || (verb != "response" && verb != "error") {
			c.renderError(404, "NotFound", "unknown path "+path)
			return
		}
		if method != "POST" {
			c.renderError(405, "MethodNotAllowed", "use POST")
			return
		}
		r.answer(c, id, verb == "error")
	default:
		c.renderError(404, "NotFound", "unknown path "+path)
	}
}

// next serves GET /invocation/next: the pending invocation at once, or this connection waits for the
// host's next one (relay.dispatch writes it here).
func (r *relay) next(c *httpConn) {
	c.finishBody() // a body on a GET is read away first: the answer may be written from elsewhere
	r.mu.Lock()
	if r.current != nil {
		state := r.current.id
		r.mu.Unlock()
		c.renderError(403, "InvalidStateTransition",
			"State transition from Invoke to Ready failed for runtime. Error: request "+state+" has not been answered (POST its /response or /error first)")
		return
	}
	if r.waiter != nil {
		r.mu.Unlock()
		c.renderError(403, "InvalidStateTransition",
			"State transition from Ready to Ready failed for runtime. Error: another GET /invocation/next is already waiting")
		return
	}
	if !r.initDone {
		r.drainLocked()
		r.initDone = true
		close(r.ready)
	}
	c.nextReq = c.req
	r.waiter = c
	inv := r.handOutLocked()
	r.mu.Unlock()
	if inv != nil {
		c.writeNext(r, inv)
	}
}

// handOutLocked gives the pending invocation to the waiting `next`, if both are there: it is the
// current one from now on, and the caller writes it (httpConn.writeNext).
func (r *relay) handOutLocked() *invocation {
	inv, c := r.pending, r.waiter
	if inv == nil || c == nil {
		return nil
	}
	r.pending, r.waiter = nil, nil
	r.drainLocked() // output from before this call belongs to no invocation
	r.current = inv
	c.writing = true
	return inv
}

// writeNext writes the answer to this connection's waiting `next`: the invocation's event.
func (c *httpConn) writeNext(r *relay, inv *invocation) {
	b := appendStatus(c.out[:0], c.nextReq.http10, 200)
	b = appendHeader(b, "Lambda-Runtime-Aws-Request-Id", inv.id)
	b = append(b, "Lambda-Runtime-Deadline-Ms: "...)
	b = strconv.AppendInt(b, inv.deadlineMs, 10)
	b = append(b, "\r\n"...)
	b = appendHeader(b, "Lambda-Runtime-Invoked-Function-Arn", r.cfg.FunctionArn)
	b = append(b, "Lambda-Runtime-Trace-Id: "...)
	b = appendTraceID(b, inv.id)
	b = append(b, "\r\n"...)
	if value := compactJSON(inv.clientCtx); value != "" {
		b = appendHeader(b, "Lambda-Runtime-Client-Context", value)
	}
	if value := compactJSON(inv.cognito); value != "" {
		b = appendHeader(b, "Lambda-Runtime-Cognito-Identity", value)
	}
	if len(inv.event) == 0 { // always a body: the Content-Type below says JSON
		b = append(b, "Content-Type: application/json\r\n"...)
	}
	close, keepAlive10 := connectionHeader(&c.nextReq)
	b = appendCommon(b, len(inv.event), close, keepAlive10)
	var err error
	if len(inv.event) <= 64<<10 { // one write; a large event is not copied
		b = append(b, inv.event...)
		_, err = c.rw.Write(b)
	} else if _, err = c.rw.Write(b); err == nil {
		_, err = c.rw.Write(inv.event)
	}
	c.keepOut(b)
	if c.nextReq.close || err != nil {
		closeWrite(c.nc)
	}
	c.answered()
}

// appendHeader appends one header line; CR and LF in the value become spaces, as net/http writes them.
func appendHeader(b []byte, name, value string) []byte {
	b = append(b, name...)
	b = append(b, ": "...)
	start := len(b)
	b = append(b, strings.TrimSpace(value)...)
	for i := start; i < len(b); i++ {
		if b[i] == '\r' || b[i] == '\n' {
			b[i] = ' '
		}
	}
	return append(b, "\r\n"...)
}

// compactJSON is a JSON value on one line (a header value), or "" for none.
func compactJSON(raw []byte) string {
	var out bytes.Buffer
	if len(raw) == 0 || string(raw) == "null" || json.Compact(&out, raw) != nil {
		return ""
	}
	return out.String()
}

// appendTraceID appends "Root=1-%08x-%024x;Parent=%016x;Sampled=0" of the time and the id's first 12 bytes.
func appendTraceID(b []byte, id string) []byte {
	now := time.Now().Unix()
	var tail [12]byte
	copy(tail[:], id)
	b = append(b, "Root=1-"...)
	b = appendHexPadded(b, now, 8)
	b = append(b, '-')
	var tailHex [24]byte
	hex.Encode(tailHex[:], tail[:])
	b = append(b, tailHex[:]...)
	b = append(b, ";Parent="...)
	b = appendHexPadded(b, now, 16)
	return append(b, ";Sampled=0"...)
}

func appendHexPadded(b []byte, v int64, width int) []byte {
	digits := strconv.FormatInt(v, 16)
	for i := len(digits); i < width; i++ {
		b = append(b, '0')
	}
	return append(b, digits...)
}

// claim marks the current invocation answered if `id` names it; nil if not (a wrong or stale id).
func (r *relay) claim(id string) *invocation {
	r.mu.Lock()
	defer r.mu.Unlock()
	inv := r.current
	if inv == nil || inv.id != id || inv.answered {
		return nil
	}
	inv.answered = true
	return inv
}

func (r *relay) answer(c *httpConn, id string, isError bool) {
	inv := r.claim(id)
	if inv == nil {
		c.renderError(400, "InvalidRequestID", "Invalid request ID")
		return
	}
	if isError {
		body, _ := c.readBody(maxErrorBytes)
		errorType, message, trace := parseError(body, c.req.errorType)
		r.finish(inv, outcome{err: errorObject(errorType, message, trace)})
		c.respond(202, accepted)
		return
	}
	limit := r.cfg.MaxResultBytes
	body, err := c.readBody(limit + 1)
	if len(body) > limit {
		message := fmt.Sprintf("the function's response is larger than the limit of %d bytes", limit)
		r.finish(inv, outcome{err: errorObject("ResultTooLarge", message, "")})
		c.renderError(413, "RequestEntityTooLarge", fmt.Sprintf("Exceeded maximum allowed payload size (%d bytes).", limit))
		return
	}
	if err != nil {
		r.finish(inv, outcome{err: errorObject("Runtime.TruncatedResponse", "the response body was cut off: "+err.Error(), "")})
		c.renderError(400, "TruncatedHTTPRequest", "HTTP request detected as truncated")
		return
	}
	// A streamed response reports a failure after its body, in trailers.
	if errorType := c.req.trailerErr; errorType != "" {
		detail, _ := base64.StdEncoding.DecodeString(c.req.trailerMsg)
		_, message, trace := parseError(detail, errorType)
		r.finish(inv, outcome{err: errorObject(errorType, message, trace)})
		c.respond(202, accepted)
		return
	}
	r.finish(inv, outcome{result: asJSON(body)})
	c.respond(202, accepted)
}

// asJSON keeps a JSON response as it is (no re-encoding) and makes any other bytes a JSON string.
func asJSON(body []byte) []byte {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return []byte("null")
	}
	if json.Valid(trimmed) {
		return trimmed
	}
	return jsonString(body)
}

// parseError reads Lambda's error shape ({"errorMessage", "errorType", "stackTrace"}); other bodies
// become the message. The body's errorType wins over the header's, as Lambda reports it.
func parseError(body []byte, headerType string) (string, string, string) {
	var shape struct {
		ErrorMessage *string         `json:"errorMessage"`
		ErrorType    string          `json:"errorType"`
		StackTrace   json.RawMessage `json:"stackTrace"`
	}
	errorType, message, trace := headerType, strings.TrimSpace(string(body)), ""
	if json.Unmarshal(body, &shape) == nil {
		if shape.ErrorType != "" {
			errorType = shape.ErrorType
		}
		if shape.ErrorMessage != nil {
			message = *shape.ErrorMessage
		}
		var lines []string
		if json.Unmarshal(shape.StackTrace, &lines) == nil {
			trace = strings.Join(lines, "\n")
		} else if len(shape.StackTrace) > 0 && string(shape.StackTrace) != "null" {
			trace = string(shape.StackTrace)
		}
	}
	if errorType == "" {
		errorType = "Unhandled"
	}
	return errorType, message, trace
}

func (r *relay) postInitError(c *httpConn) {
	r.mu.Lock()
	done := r.initDone
	r.mu.Unlock()
	if done {
		c.renderError(403, "InvalidStateTransition",
			"State transition from Ready to InitError failed for runtime. Error: the runtime already asked for work")
		return
	}
	body, _ := c.readBody(maxErrorBytes)
	if headerType := c.req.errorType; headerType != "" {
		errorType, message, trace := parseError(body, headerType)
		body, _ = json.Marshal(map[string]interface{}{"errorType": errorType, "errorMessage": message, "stackTrace": strings.Split(trace, "\n")})
	}
	select {
	case r.initErr <- body:
	default: // reported already
	}
	c.respond(202, accepted)
}
