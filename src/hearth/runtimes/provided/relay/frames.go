package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"
	"unicode/utf8"
)

// ----------------------------------------------------------------------------------- host protocol

func readFrame(reader *bufio.Reader) (*frame, error) {
	var header [4]byte
	if _, err := io.ReadFull(reader, header[:]); err != nil {
		return nil, err
	}
	length := binary.BigEndian.Uint32(header[:])
	if length > maxFrameBytes {
		return nil, fmt.Errorf("frame of %d bytes over the limit", length)
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(reader, body); err != nil {
		return nil, err
	}
	if f, ok := decodeInvoke(body); ok {
		return f, nil
	}
	f := &frame{}
	if err := json.Unmarshal(body, f); err != nil {
		return nil, fmt.Errorf("frame is not a JSON object: %w", err)
	}
	return f, nil
}

// decodeInvoke reads an invoke frame, the one every call brings, without encoding/json's reflection
// and copies (its event stays in body). ok is false for any other frame, or any key or value it does
// not expect: encoding/json decodes those, as before.
func decodeInvoke(body []byte) (*frame, bool) {
	if !json.Valid(body) {
		return nil, false
	}
	f := &frame{}
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return nil, false
	}
	i = skipSpace(body, i+1)
	for i < len(body) && body[i] != '}' {
		key, end, ok := plainString(body, i)
		if !ok {
			return nil, false
		}
		start := skipSpace(body, skipSpace(body, end)+1) // past the colon
		end = skipValue(body, start)
		value := body[start:end]
		switch key {
		case "type":
			f.Type, _, ok = plainString(body, start)
		case "id":
			f.ID, _, ok = plainString(body, start)
		case "event":
			f.Event = value
		case "client_context":
			f.ClientCtx = value
		case "cognito_identity":
			f.Cognito = value
		case "timeout_ms":
			var err error
			f.TimeoutMs, err = strconv.ParseInt(string(value), 10, 64)
			ok = err == nil
		default:
			ok = false
		}
		if !ok {
			return nil, false
		}
		i = skipSpace(body, end)
		if i < len(body) && body[i] == ',' {
			i = skipSpace(body, i+1)
		}
	}
	return f, f.Type == "invoke"
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// plainString is the JSON string at b[i] if it has no escapes (ok false otherwise), and where it ends.
func plainString(b []byte, i int) (string, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return "", i, false
	}
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			return "", i, false
		case '"':
			return string(b[i+1 : j]), j + 1, true
		}
	}
	return "", i, false
}

// skipValue is where the JSON value at b[i] ends (b is valid JSON).
func skipValue(b []byte, i int) int {
	depth := 0
	for ; i < len(b); i++ {
		switch b[i] {
		case '"':
			for i++; b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
			if depth == 0 {
				return i + 1
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return i
			}
			depth--
			if depth == 0 {
				return i + 1
			}
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return i
			}
		}
	}
	return i
}

// writeFrame sends one frame: the JSON head, then, if there is one, "\n" and the payload. A payload
// up to 64 KiB is copied after the head (one write); a larger one is written as it is.
func (r *relay) writeFrame(head []byte, payload ...[]byte) error {
	size := len(head)
	for _, part := range payload {
		size += 1 + len(part)
	}
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	b := binary.BigEndian.AppendUint32(r.wbuf[:0], uint32(size))
	b = append(b, head...)
	var large []byte
	for _, part := range payload {
		b = append(b, '\n')
		if len(part) > 64<<10 {
			large = part
			break
		}
		b = append(b, part...)
	}
	_, err := r.host.Write(b)
	if err == nil && large != nil {
		_, err = r.host.Write(large)
	}
	if cap(b) <= 1<<20 {
		r.wbuf = b
	}
	return err
}

// send writes one frame without a payload.
func (r *relay) send(body []byte) error { return r.writeFrame(body) }

func errorObject(errorType, message, traceback string) []byte {
	object := map[string]string{"type": errorType, "message": message}
	if traceback != "" {
		object["traceback"] = traceback
	}
	encoded, _ := json.Marshal(object)
	return encoded
}

func jsonString(data []byte) []byte {
	return appendJSONString(nil, data)
}

// appendJSONString appends data as a JSON string, byte for byte as json.Marshal(string(data)) would;
// text with nothing to escape (the usual log line) is copied as it is.
func appendJSONString(b []byte, data []byte) []byte {
	for _, ch := range data {
		if ch < 0x20 || ch >= utf8.RuneSelf || ch == '"' || ch == '\\' || ch == '<' || ch == '>' || ch == '&' {
			encoded, _ := json.Marshal(string(data))
			return append(b, encoded...)
		}
	}
	b = append(b, '"')
	b = append(b, data...)
	return append(b, '"')
}

// sendResult sends one invocation's result frame: an ok result as the payload after "\n", as it came.
func (r *relay) sendResult(id string, o outcome, inv *invocation) error {
	header := appendResultFrame(make([]byte, 0, 256), `{"type":"result",`, id, o, inv)
	if o.err != nil {
		return r.writeFrame(header)
	}
	return r.writeFrame(header, o.result)
}

// appendResultFrame appends one call's reply without its result: an ok one says how long its result
// is (`result_bytes`), and the result follows the JSON as payload (docs/protocol.md).
func appendResultFrame(b []byte, head, id string, o outcome, inv *invocation) []byte {
	b = append(b, head...)
	b = append(b, `"id":`...)
	b = appendJSONString(b, []byte(id))
	if o.err == nil {
		b = append(b, `,"ok":true,"result_bytes":`...)
		b = strconv.AppendInt(b, int64(len(o.result)), 10)
	} else {
		b = append(b, `,"ok":false,"error":`...)
		b = append(b, o.err...)
	}
	b = append(b, `,"stdout":`...)
	b = appendJSONString(b, inv.out.streams[0])
	b = append(b, `,"stderr":`...)
	b = appendJSONString(b, inv.out.streams[1])
	b = append(b, `,"logs_truncated":`...)
	b = strconv.AppendBool(b, inv.out.truncated)
	b = append(b, `,"duration_ms":`...)
	b = appendMillis(b, time.Since(inv.started).Microseconds())
	return append(b, '}')
}

// appendMillis appends microseconds as milliseconds with three decimals (what
// strconv.AppendFloat(float64(us)/1000, 'f', 3) gives, without its slow decimal path).
func appendMillis(b []byte, us int64) []byte {
	if us < 0 {
		b, us = append(b, '-'), -us
	}
	b = strconv.AppendInt(b, us/1000, 10)
	frac := us % 1000
	return append(b, '.', byte('0'+frac/100), byte('0'+frac/10%10), byte('0'+frac%10))
}
