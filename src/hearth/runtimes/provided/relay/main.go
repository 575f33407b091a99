// Command relay is Hearth's in-sandbox agent for custom runtimes (docs/runtimes.md).
//
// It serves AWS Lambda's Runtime API (2018-06-01) on 127.0.0.1:9001 to the program it starts as its
// child (a zip's `bootstrap`, or a container image's ENTRYPOINT + CMD), and speaks Hearth's agent
// protocol (docs/protocol.md: length-prefixed JSON frames) to the host over the sandbox's agent socket.
// To the engine a custom runtime is then one more sandbox that says hello, loads, and answers invoke
// and batch frames. Standard library only, built static (CGO_ENABLED=0): it runs in any image, FROM
// scratch included, bind-mounted read-only like the other agents.
package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	apiVersion       = "2018-06-01"
	prefix           = "/" + apiVersion + "/runtime/"
	maxFrameBytes    = 128 << 20
	maxErrorBytes    = 1 << 20
	defaultInitLimit = 10 * time.Second
)

// frame is every frame the host sends (init, invoke, batch, warm); unused fields stay empty.
type frame struct {
	Type string `json:"type"`
	// init
	Command        []string          `json:"command"`
	WorkingDir     string            `json:"working_dir"`
	Env            map[string]string `json:"env"`
	FunctionArn    string            `json:"function_arn"`
	MaxLogBytes    int               `json:"max_log_bytes"`
	MaxResultBytes int               `json:"max_result_bytes"`
	InitTimeoutMs  int64             `json:"init_timeout_ms"`
	Files          []codeFile        `json:"files"`
	// invoke / batch
	ID           string          `json:"id"`
	Event        json.RawMessage `json:"event"`
	TimeoutMs    int64           `json:"timeout_ms"`
	Items        []item          `json:"items"`
	BatchHandler bool            `json:"batch_handler"`
	ClientCtx    json.RawMessage `json:"client_context"`
	Cognito      json.RawMessage `json:"cognito_identity"`
}

type item struct {
	ID        string          `json:"id"`
	Event     json.RawMessage `json:"event"`
	ClientCtx json.RawMessage `json:"client_context"`
	Cognito   json.RawMessage `json:"cognito_identity"`
}

// capture is one invocation's (or the init phase's) output, each stream capped.
type capture struct {
	streams   [2][]byte
	limit     int
	truncated bool
}

func (c *capture) add(stream int, data []byte) {
	room := c.limit - len(c.streams[stream])
	if len(data) > room {
		if room < 0 {
			room = 0
		}
		data = data[:room]
		c.truncated = true
	}
	c.streams[stream] = append(c.streams[stream], data...)
}

// outcome of one invocation: a JSON result, or a Hearth error object.
type outcome struct {
	result []byte // raw JSON
	err    []byte // {"type", "message", "traceback"}
	sent   bool   // its result frame went to the host already (a single invoke, from the HTTP handler)
}

type invocation struct {
	id         string
	event      []byte
	deadlineMs int64
	clientCtx  []byte
	cognito    []byte
	out        capture
	started    time.Time
	answered   bool
	direct     bool // a single invoke: the HTTP handler that receives the answer sends the result frame
	done       chan outcome
}

type logPipe struct {
	index int
	file  *os.File
	raw   syscall.RawConn
}

type relay struct {
	conn    net.Conn
	writeMu sync.Mutex
	cfg     *frame

	mu       sync.Mutex // guards everything below, and the log pipes' reads
	initDone bool
	busy     bool
	waiting  bool
	current  *invocation
	initLog  capture
	pipes    []*logPipe
	drainBuf []byte // drainLocked's buffer, reused: a fresh 64 KiB one per call cost a clear and GC work per invocation
	exitText string

	nextCh    chan *invocation
	ready     chan struct{}
	initErr   chan []byte
	childDone chan struct{}
	started   time.Time
}

func main() {
	// One thread runs every goroutine: an invocation hops between several (host frames, the runtime's
	// HTTP calls), and on one thread each hop is a goroutine switch rather than a futex wake-up of
	// another thread, which also keeps a sandbox with a fraction of a CPU from being throttled.
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "hearth relay: %v\n", err)
		os.Exit(1)
	}
}

func getenv(key, fallback string) string {
	if value := os.Getenv(key); value != "" {
		return value
	}
	return fallback
}

func run() error {
	listener, err := net.Listen("tcp", getenv("HEARTH_RUNTIME_API", "127.0.0.1:9001"))
	if err != nil {
		return fmt.Errorf("cannot listen for the Runtime API: %w", err)
	}
	conn, err := dialHost()
	if err != nil {
		return fmt.Errorf("cannot reach the host: %w", err)
	}
	r := &relay{
		conn:      conn,
		nextCh:    make(chan *invocation),
		ready:     make(chan struct{}),
		initErr:   make(chan []byte, 1),
		childDone: make(chan struct{}),
	}
	hello := fmt.Sprintf(`{"type":"hello","runtime":"provided","runtime_version":%q,"pid":%d}`, apiVersion, os.Getpid())
	if err := r.send([]byte(hello)); err != nil {
		return err
	}
	reader := bufio.NewReaderSize(conn, 1<<16)
	var init *frame
	for init == nil {
		f, err := readFrame(reader)
		if err != nil {
			return fmt.Errorf("host closed before init: %w", err)
		}
		switch f.Type {
		case "init":
			init = f
		case "warm":
			_ = r.send([]byte(`{"type":"warmed","ms":0}`))
		}
	}
	r.cfg = init
	if init.MaxLogBytes <= 0 {
		init.MaxLogBytes = 64 << 10
	}
	if init.MaxResultBytes <= 0 {
		init.MaxResultBytes = 6 << 20
	}
	r.initLog.limit = init.MaxLogBytes
	server := &http.Server{Handler: r, ReadHeaderTimeout: 30 * time.Second, ErrorLog: nil}
	go func() { _ = server.Serve(listener) }()

	r.started = time.Now()
	if err := writeFiles(init.Files); err != nil {
		r.initFailed("Runtime.InvalidEntrypoint", "writing the function's files: "+err.Error(), reader)
		return nil
	}
	cmd, err := r.startChild()
	if err != nil {
		r.initFailed("Runtime.InvalidEntrypoint", err.Error(), reader)
		return nil
	}
	go r.waitChild(cmd)
	limit := defaultInitLimit
	if init.InitTimeoutMs > 0 {
		limit = time.Duration(init.InitTimeoutMs) * time.Millisecond
	}
	timer := time.NewTimer(limit)
	select {
	case <-r.ready:
		timer.Stop()
		ms := float64(time.Since(r.started).Microseconds()) / 1000
		if err := r.send([]byte(fmt.Sprintf(`{"type":"ready","init_ms":%.3f}`, ms))); err != nil {
			return err
		}
	case body := <-r.initErr:
		r.initFailedWith(body, reader)
		return nil
	case <-r.childDone:
		time.Sleep(10 * time.Millisecond) // an init/error posted right before exiting wins
		select {
		case body := <-r.initErr:
			r.initFailedWith(body, reader)
		default:
			r.initFailed("Runtime.ExitError", "Runtime exited before asking for work (GET "+prefix+"invocation/next): "+r.exitText, reader)
		}
		return nil
	case <-timer.C:
		r.initFailed("Runtime.InitTimeout", fmt.Sprintf("the runtime did not ask for work (GET %sinvocation/next) within %.1f s", prefix, limit.Seconds()), reader)
		return nil
	}

	// Work is handled right in this loop: with concurrency 1 the host sends the next frame only after
	// the answer to the previous one (and when it closes the stream meanwhile, it stops the sandbox).
	for {
		f, err := readFrame(reader)
		if err != nil {
			os.Exit(0) // the host closed the stream: the sandbox is being stopped
		}
		if f.Type == "invoke" || f.Type == "batch" {
			r.handle(f)
		}
	}
}

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
	f := &frame{}
	if err := json.Unmarshal(body, f); err != nil {
		return nil, fmt.Errorf("frame is not a JSON object: %w", err)
	}
	return f, nil
}

// send writes one frame whose body is the parts joined (a JSON object, or one followed by "\n" and a payload).
func (r *relay) send(parts ...[]byte) error {
	size := 0
	for _, part := range parts {
		size += len(part)
	}
	buf := make([]byte, 4, 4+size)
	binary.BigEndian.PutUint32(buf, uint32(size))
	for _, part := range parts {
		buf = append(buf, part...)
	}
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	_, err := r.conn.Write(buf)
	return err
}

func errorObject(errorType, message, traceback string) []byte {
	object := map[string]string{"type": errorType, "message": message}
	if traceback != "" {
		object["traceback"] = traceback
	}
	encoded, _ := json.Marshal(object)
	return encoded
}

func jsonString(data []byte) []byte {
	encoded, _ := json.Marshal(string(data))
	return encoded
}

func (r *relay) initFailed(errorType, message string, reader *bufio.Reader) {
	r.mu.Lock()
	r.drainLocked()
	output := string(r.initLog.streams[0]) + string(r.initLog.streams[1])
	r.mu.Unlock()
	r.finishInit(errorObject(errorType, message, output), reader)
}

// initFailedWith reports the body of POST /runtime/init/error (Lambda's errorMessage/errorType shape).
func (r *relay) initFailedWith(body []byte, reader *bufio.Reader) {
	errorType, message, trace := parseError(body, "")
	r.mu.Lock()
	r.drainLocked()
	if trace == "" {
		trace = string(r.initLog.streams[0]) + string(r.initLog.streams[1])
	}
	r.mu.Unlock()
	r.finishInit(errorObject(errorType, message, trace), reader)
}

func (r *relay) finishInit(errorJSON []byte, reader *bufio.Reader) {
	var frame bytes.Buffer
	frame.WriteString(`{"type":"init_error","error":`)
	frame.Write(errorJSON)
	frame.WriteString("}")
	_ = r.send(frame.Bytes())
	for { // wait for the host to close the stream (docs/protocol.md)
		if _, err := readFrame(reader); err != nil {
			return
		}
	}
}

// ------------------------------------------------------------------------------------------ child

func (r *relay) startChild() (*exec.Cmd, error) {
	if len(r.cfg.Command) == 0 {
		return nil, errors.New("no command to start")
	}
	cmd := exec.Command(r.cfg.Command[0], r.cfg.Command[1:]...)
	cmd.Dir = r.cfg.WorkingDir
	env := make([]string, 0, len(os.Environ())+len(r.cfg.Env))
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HEARTH_") {
			env = append(env, kv)
		}
	}
	for key, value := range r.cfg.Env {
		env = append(env, key+"="+value)
	}
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var writers []*os.File
	for index := 0; index < 2; index++ {
		pr, pw, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		raw, err := pr.SyscallConn()
		if err != nil {
			return nil, err
		}
		r.pipes = append(r.pipes, &logPipe{index: index, file: pr, raw: raw})
		writers = append(writers, pw)
	}
	cmd.Stdout, cmd.Stderr = writers[0], writers[1]
	err := cmd.Start()
	for _, w := range writers {
		w.Close()
	}
	if err != nil {
		return nil, err
	}
	for _, pipe := range r.pipes {
		go r.pump(pipe)
	}
	return cmd, nil
}

func (r *relay) waitChild(cmd *exec.Cmd) {
	err := cmd.Wait()
	text := "exit status 0"
	if err != nil {
		text = err.Error()
	}
	r.mu.Lock()
	r.exitText = text
	r.drainLocked()
	busy := r.busy
	r.mu.Unlock()
	close(r.childDone)
	if !busy && r.isReady() {
		fmt.Fprintf(os.Stderr, "hearth relay: the runtime exited (%s) between invocations\n", text)
		os.Exit(0) // the host sees the stream close: this sandbox is done
	}
}

func (r *relay) isReady() bool {
	select {
	case <-r.ready:
		return true
	default:
		return false
	}
}

// pump reads one of the child's output pipes; the read and its attribution happen under r.mu, so
// drainLocked sees every byte the child wrote before it called the Runtime API.
func (r *relay) pump(pipe *logPipe) {
	buf := make([]byte, 64<<10)
	eof := false
	for !eof {
		err := pipe.raw.Read(func(fd uintptr) bool {
			r.mu.Lock()
			defer r.mu.Unlock()
			n, err := syscall.Read(int(fd), buf)
			if err == syscall.EAGAIN || err == syscall.EINTR {
				return false
			}
			if n <= 0 {
				eof = true
				return true
			}
			r.sinkLocked(pipe.index, buf[:n])
			return true
		})
		if err != nil {
			return
		}
	}
}

func (r *relay) drainLocked() {
	if r.drainBuf == nil {
		r.drainBuf = make([]byte, 64<<10)
	}
	buf := r.drainBuf
	for _, pipe := range r.pipes {
		_ = pipe.raw.Control(func(fd uintptr) {
			for {
				n, _ := syscall.Read(int(fd), buf)
				if n <= 0 {
					return
				}
				r.sinkLocked(pipe.index, buf[:n])
			}
		})
	}
}

func (r *relay) sinkLocked(stream int, data []byte) {
	switch {
	case r.current != nil:
		r.current.out.add(stream, data)
	case !r.initDone:
		r.initLog.add(stream, data)
		os.Stderr.Write(data)
	default:
		os.Stderr.Write(data) // between invocations: the sandbox's own log
	}
}

// ---------------------------------------------------------------------------------- invocations

func (r *relay) handle(f *frame) {
	r.mu.Lock()
	r.busy = true
	r.mu.Unlock()
	if f.Type == "invoke" {
		it := item{ID: f.ID, Event: f.Event, ClientCtx: f.ClientCtx, Cognito: f.Cognito}
		o, inv := r.invoke(it, f.TimeoutMs, true)
		if !o.sent {
			_ = r.sendResult(f.ID, o, inv)
		}
	} else {
		r.batch(f)
	}
	select {
	case <-r.childDone:
		os.Exit(0) // the runtime died during this work: the host gets the answer, then a closed stream
	default:
	}
	r.mu.Lock()
	r.busy = false
	r.mu.Unlock()
}

// batch answers one batch_result frame: the items' result frames, then "\n" and the ok items' results
// one after another (each `result_bytes` long) when there is any.
func (r *relay) batch(f *frame) {
	var out, payload bytes.Buffer
	out.WriteString(`{"type":"batch_result","id":`)
	out.Write(jsonString([]byte(f.ID)))
	out.WriteString(`,"results":[`)
	if f.BatchHandler { // one call with the list of events; a list of results of the same length back
		var events bytes.Buffer
		events.WriteByte('[')
		for i, it := range f.Items {
			if i > 0 {
				events.WriteByte(',')
			}
			events.Write(eventOrNull(it.Event))
		}
		events.WriteByte(']')
		o, inv := r.invoke(item{ID: f.ID, Event: events.Bytes()}, f.TimeoutMs, false)
		var results []json.RawMessage
		if o.err == nil {
			if json.Unmarshal(o.result, &results) != nil || len(results) != len(f.Items) {
				o = outcome{err: errorObject("BatchResultMismatch", fmt.Sprintf("a batch handler must return a list of %d results", len(f.Items)), "")}
			}
		}
		for i, it := range f.Items {
			if i > 0 {
				out.WriteByte(',')
			}
			each := o
			if o.err == nil {
				each = outcome{result: results[i]}
				payload.Write(each.result)
			}
			out.Write(resultFrame("{", it.ID, each, inv))
		}
	} else { // one after another, each with its own logs, duration and error
		for i, it := range f.Items {
			if i > 0 {
				out.WriteByte(',')
			}
			o, inv := r.invoke(it, f.TimeoutMs, false)
			if o.err == nil {
				payload.Write(o.result)
			}
			out.Write(resultFrame("{", it.ID, o, inv))
		}
	}
	out.WriteString("]}")
	if payload.Len() == 0 { // no ok item (an ok result is never empty: at least `null`)
		_ = r.send(out.Bytes())
		return
	}
	_ = r.send(out.Bytes(), newline, payload.Bytes())
}

var newline = []byte("\n")

// sendResult sends one invocation's result frame: an ok result as the payload after "\n", as it came.
func (r *relay) sendResult(id string, o outcome, inv *invocation) error {
	header := resultFrame(`{"type":"result",`, id, o, inv)
	if o.err != nil {
		return r.send(header)
	}
	return r.send(header, newline, o.result)
}

func eventOrNull(event json.RawMessage) []byte {
	if len(event) == 0 {
		return []byte("null")
	}
	return event
}

// resultFrame is one call's reply without its result: an ok one says how long its result is
// (`result_bytes`), and the result follows the JSON as payload (docs/protocol.md).
func resultFrame(head, id string, o outcome, inv *invocation) []byte {
	var b bytes.Buffer
	b.WriteString(head)
	b.WriteString(`"id":`)
	b.Write(jsonString([]byte(id)))
	if o.err == nil {
		b.WriteString(`,"ok":true,"result_bytes":`)
		b.WriteString(strconv.Itoa(len(o.result)))
	} else {
		b.WriteString(`,"ok":false,"error":`)
		b.Write(o.err)
	}
	b.WriteString(`,"stdout":`)
	b.Write(jsonString(inv.out.streams[0]))
	b.WriteString(`,"stderr":`)
	b.Write(jsonString(inv.out.streams[1]))
	b.WriteString(`,"logs_truncated":`)
	b.WriteString(strconv.FormatBool(inv.out.truncated))
	b.WriteString(`,"duration_ms":`)
	b.WriteString(strconv.FormatFloat(float64(time.Since(inv.started).Microseconds())/1000, 'f', 3, 64))
	b.WriteString("}")
	return b.Bytes()
}

// invoke hands one event to the runtime's next GET /invocation/next and waits for its answer.
func (r *relay) invoke(it item, timeoutMs int64, direct bool) (outcome, *invocation) {
	if timeoutMs <= 0 {
		timeoutMs = 30000
	}
	inv := &invocation{
		id:         it.ID,
		event:      eventOrNull(it.Event),
		deadlineMs: time.Now().UnixMilli() + timeoutMs,
		clientCtx:  it.ClientCtx,
		cognito:    it.Cognito,
		started:    time.Now(),
		direct:     direct,
		done:       make(chan outcome, 1),
	}
	inv.out.limit = r.cfg.MaxLogBytes
	select {
	case r.nextCh <- inv:
	case <-r.childDone:
		return r.exitOutcome(inv), inv
	}
	select {
	case o := <-inv.done:
		return o, inv
	case <-r.childDone:
		select {
		case o := <-inv.done: // answered just before exiting
			return o, inv
		default:
		}
		return r.exitOutcome(inv), inv
	}
}

func (r *relay) exitOutcome(inv *invocation) outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.drainLocked()
	if r.current == inv {
		r.current = nil
	}
	message := fmt.Sprintf("RequestId: %s Error: Runtime exited with error: %s", inv.id, r.exitText)
	return outcome{err: errorObject("Runtime.ExitError", message, "")}
}

// --------------------------------------------------------------------------------- Runtime API

func renderJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func renderError(w http.ResponseWriter, status int, errorType, message string) {
	body, _ := json.Marshal(map[string]string{"errorMessage": message, "errorType": errorType})
	renderJSON(w, status, body)
}

var accepted = []byte(`{"status":"OK"}`)

func (r *relay) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	path := req.URL.Path
	if !strings.HasPrefix(path, prefix) {
		renderError(w, http.StatusNotFound, "NotFound", "unknown path "+path+" (the Runtime API is under "+prefix+")")
		return
	}
	rest := path[len(prefix):]
	switch {
	case rest == "invocation/next":
		if req.Method != http.MethodGet {
			renderError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "use GET")
			return
		}
		r.next(w, req)
	case rest == "init/error":
		if req.Method != http.MethodPost {
			renderError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "use POST")
			return
		}
		r.postInitError(w, req)
	case strings.HasPrefix(rest, "invocation/"):
		parts := strings.Split(rest[len("invocation/"):], "/")
		if len(parts) != 2 || (parts[1] != "response" && parts[1] != "error") {
			renderError(w, http.StatusNotFound, "NotFound", "unknown path "+path)
			return
		}
		if req.Method != http.MethodPost {
			renderError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "use POST")
			return
		}
		r.answer(w, req, parts[0], parts[1] == "error")
	default:
		renderError(w, http.StatusNotFound, "NotFound", "unknown path "+path)
	}
}

func (r *relay) next(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	if r.current != nil {
		state := r.current.id
		r.mu.Unlock()
		renderError(w, http.StatusForbidden, "InvalidStateTransition",
			"State transition from Invoke to Ready failed for runtime. Error: request "+state+" has not been answered (POST its /response or /error first)")
		return
	}
	if r.waiting {
		r.mu.Unlock()
		renderError(w, http.StatusForbidden, "InvalidStateTransition",
			"State transition from Ready to Ready failed for runtime. Error: another GET /invocation/next is already waiting")
		return
	}
	r.waiting = true
	if !r.initDone {
		r.drainLocked()
		r.initDone = true
		close(r.ready)
	}
	r.mu.Unlock()
	var inv *invocation
	select {
	case inv = <-r.nextCh:
	case <-req.Context().Done():
	}
	r.mu.Lock()
	r.waiting = false
	if inv != nil {
		r.drainLocked() // output from before this call belongs to no invocation
		r.current = inv
	}
	r.mu.Unlock()
	if inv == nil {
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Lambda-Runtime-Aws-Request-Id", inv.id)
	h.Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(inv.deadlineMs, 10))
	h.Set("Lambda-Runtime-Invoked-Function-Arn", r.cfg.FunctionArn)
	h.Set("Lambda-Runtime-Trace-Id", traceID(inv.id))
	if value := compactJSON(inv.clientCtx); value != "" {
		h.Set("Lambda-Runtime-Client-Context", value)
	}
	if value := compactJSON(inv.cognito); value != "" {
		h.Set("Lambda-Runtime-Cognito-Identity", value)
	}
	h.Set("Content-Length", strconv.Itoa(len(inv.event)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(inv.event)
}

// compactJSON is a JSON value on one line (a header value), or "" for none.
func compactJSON(raw []byte) string {
	var out bytes.Buffer
	if len(raw) == 0 || string(raw) == "null" || json.Compact(&out, raw) != nil {
		return ""
	}
	return out.String()
}

func traceID(id string) string {
	now := time.Now().Unix()
	var tail [12]byte
	copy(tail[:], id)
	return fmt.Sprintf("Root=1-%08x-%024x;Parent=%016x;Sampled=0", now, tail, now)
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

func (r *relay) finish(inv *invocation, o outcome) {
	r.mu.Lock()
	r.drainLocked()
	r.current = nil
	r.mu.Unlock()
	if inv.direct { // the host first, the runtime's 202 after: the answer is on its way one hop sooner
		o.sent = r.sendResult(inv.id, o, inv) == nil
	}
	inv.done <- o
}

func (r *relay) answer(w http.ResponseWriter, req *http.Request, id string, isError bool) {
	inv := r.claim(id)
	if inv == nil {
		renderError(w, http.StatusBadRequest, "InvalidRequestID", "Invalid request ID")
		return
	}
	if isError {
		body, _ := io.ReadAll(io.LimitReader(req.Body, maxErrorBytes))
		errorType, message, trace := parseError(body, req.Header.Get("Lambda-Runtime-Function-Error-Type"))
		r.finish(inv, outcome{err: errorObject(errorType, message, trace)})
		renderJSON(w, http.StatusAccepted, accepted)
		return
	}
	limit := r.cfg.MaxResultBytes
	body, err := io.ReadAll(io.LimitReader(req.Body, int64(limit)+1))
	if len(body) > limit {
		message := fmt.Sprintf("the function's response is larger than the limit of %d bytes", limit)
		r.finish(inv, outcome{err: errorObject("ResultTooLarge", message, "")})
		renderError(w, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge",
			fmt.Sprintf("Exceeded maximum allowed payload size (%d bytes).", limit))
		return
	}
	if err != nil {
		r.finish(inv, outcome{err: errorObject("Runtime.TruncatedResponse", "the response body was cut off: "+err.Error(), "")})
		renderError(w, http.StatusBadRequest, "TruncatedHTTPRequest", "HTTP request detected as truncated")
		return
	}
	// A streamed response reports a failure after its body, in trailers.
	if errorType := req.Trailer.Get("Lambda-Runtime-Function-Error-Type"); errorType != "" {
		detail, _ := base64.StdEncoding.DecodeString(req.Trailer.Get("Lambda-Runtime-Function-Error-Body"))
		_, message, trace := parseError(detail, errorType)
		r.finish(inv, outcome{err: errorObject(errorType, message, trace)})
		renderJSON(w, http.StatusAccepted, accepted)
		return
	}
	r.finish(inv, outcome{result: asJSON(body)})
	renderJSON(w, http.StatusAccepted, accepted)
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

func (r *relay) postInitError(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	done := r.initDone
	r.mu.Unlock()
	if done {
		renderError(w, http.StatusForbidden, "InvalidStateTransition",
			"State transition from Ready to InitError failed for runtime. Error: the runtime already asked for work")
		return
	}
	body, _ := io.ReadAll(io.LimitReader(req.Body, maxErrorBytes))
	if headerType := req.Header.Get("Lambda-Runtime-Function-Error-Type"); headerType != "" {
		errorType, message, trace := parseError(body, headerType)
		body, _ = json.Marshal(map[string]interface{}{"errorType": errorType, "errorMessage": message, "stackTrace": strings.Split(trace, "\n")})
	}
	select {
	case r.initErr <- body:
	default: // reported already
	}
	renderJSON(w, http.StatusAccepted, accepted)
}
