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
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
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
	answered   bool         // the runtime posted its answer (a second POST for it is refused)
	settled    bool         // its outcome is decided: the runtime's answer, or its exit (under relay.mu)
	direct     bool         // a single invoke: whoever settles it sends the result frame
	done       chan outcome // a batch item's answer, to the host-frame loop
}

type logPipe struct {
	index int
	fd    int
	file  *os.File
	raw   syscall.RawConn
}

type relay struct {
	host    io.ReadWriter
	writeMu sync.Mutex
	wbuf    []byte // writeFrame's buffer, reused (under writeMu)
	cfg     *frame

	// mu guards everything below, and the log pipes' reads. An invocation goes from the host's frame
	// to `pending` (no `next` waits yet) or straight to the waiting `next` (waiter), is `current`
	// once written to the runtime, and is answered by the runtime's POST on its connection's
	// goroutine: no goroutine hands an invocation to another on the way.
	mu          sync.Mutex
	initDone    bool
	busy        bool // an invocation or batch is under way (until its answer went to the host)
	idleWaiting bool // the host-frame loop waits on idle for the one under way to end
	waiter      *httpConn
	pending     *invocation
	current     *invocation
	childExited bool
	initLog     capture
	pipes       []*logPipe
	pipeFds     []int
	pipeReady   []bool
	drainBuf    []byte // drainLocked's buffer, reused: a fresh 64 KiB one per call cost a clear and GC work per invocation
	exitText    string

	idle      chan struct{}
	ready     chan struct{}
	initErr   chan []byte
	childDone chan struct{}
	started   time.Time
}

func main() {
	// One thread runs every goroutine (the host-frame loop, one per runtime connection, the log
	// pumps): on one thread a goroutine that wakes another is a switch rather than a futex wake-up
	// of another thread, which also keeps a sandbox with a fraction of a CPU from being throttled.
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
		host:      newRawIO(conn),
		idle:      make(chan struct{}, 1),
		ready:     make(chan struct{}),
		initErr:   make(chan []byte, 1),
		childDone: make(chan struct{}),
	}
	hello := fmt.Sprintf(`{"type":"hello","runtime":"provided","runtime_version":%q,"pid":%d}`, apiVersion, os.Getpid())
	if err := r.send([]byte(hello)); err != nil {
		return err
	}
	reader := bufio.NewReaderSize(r.host, 1<<16)
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
	go r.acceptLoop(listener)

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

// ---------------------------------------------------------------------------------- init failures

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
		pipe := &logPipe{index: index, file: pr, raw: raw}
		_ = raw.Control(func(fd uintptr) { pipe.fd = int(fd) })
		r.pipes = append(r.pipes, pipe)
		r.pipeFds = append(r.pipeFds, pipe.fd)
		writers = append(writers, pw)
	}
	r.pipeReady = make([]bool, len(r.pipes))
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
	r.childExited = true
	busy := r.busy
	orphan := r.orphanLocked()
	r.mu.Unlock()
	close(r.childDone)
	if orphan != nil { // a single invoke the runtime will not finish answering: answer it here, then go
		_ = r.sendResult(orphan.id, r.exitOutcome(orphan), orphan)
		os.Exit(0)
	}
	if !busy && r.isReady() {
		fmt.Fprintf(os.Stderr, "hearth relay: the runtime exited (%s) between invocations\n", text)
		os.Exit(0) // the host sees the stream close: this sandbox is done
	}
	// Otherwise a batch's loop (relay.invoke) or the goroutine sending an answer (relay.finish) exits.
}

// orphanLocked settles the single invoke under way whose answer has not been delivered, if any: as
// before, a runtime that exits fails its call even if it was posting the answer (relay.finish skips it).
func (r *relay) orphanLocked() *invocation {
	for _, inv := range []*invocation{r.pending, r.current} {
		if inv != nil && inv.direct && !inv.settled {
			inv.settled, inv.answered = true, true
			return inv
		}
	}
	return nil
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
			n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
			if errno == syscall.EAGAIN || errno == syscall.EINTR {
				return false
			}
			if errno != 0 || n == 0 {
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

// drainLocked takes in what the child has written so far: one poll of both pipes, and reads of those
// that hold something (twice per invocation, usually nothing).
func (r *relay) drainLocked() {
	if len(r.pipes) == 0 {
		return
	}
	if !readable(r.pipeFds, r.pipeReady) {
		for i := range r.pipeReady {
			r.pipeReady[i] = true
		}
	}
	if r.drainBuf == nil {
		r.drainBuf = make([]byte, 64<<10)
	}
	buf := r.drainBuf
	for i, pipe := range r.pipes {
		if !r.pipeReady[i] {
			continue
		}
		_ = pipe.raw.Control(func(fd uintptr) {
			for {
				n := readNonblocking(fd, buf)
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
	switch f.Type {
	case "invoke":
		it := item{ID: f.ID, Event: f.Event, ClientCtx: f.ClientCtx, Cognito: f.Cognito}
		r.dispatch(r.newInvocation(it, f.TimeoutMs, true))
	case "batch":
		r.mu.Lock()
		r.awaitIdleLocked()
		r.busy = true
		r.mu.Unlock()
		r.batch(f)
		select {
		case <-r.childDone:
			os.Exit(0) // the runtime died during this work: the host gets the answer, then a closed stream
		default:
		}
		r.mu.Lock()
		r.busy = false
		r.mu.Unlock()
	}
}

// awaitIdleLocked waits for the invocation under way to be answered: the host sends the next one only
// after that answer, but it may have come before the answering goroutine marked the relay idle.
func (r *relay) awaitIdleLocked() {
	for r.busy {
		r.idleWaiting = true
		r.mu.Unlock()
		<-r.idle
		r.mu.Lock()
	}
}

// dispatch starts a single invoke: written straight to the waiting `next` if there is one, else left
// pending for the next `next`. This loop then reads the host's next frame; the answer's goroutine
// sends the result (relay.finish).
func (r *relay) dispatch(inv *invocation) {
	r.mu.Lock()
	r.awaitIdleLocked()
	r.busy = true
	if r.childExited {
		r.mu.Unlock()
		_ = r.sendResult(inv.id, r.exitOutcome(inv), inv)
		os.Exit(0)
	}
	r.pending = inv
	waiter := r.waiter
	handed := r.handOutLocked()
	r.mu.Unlock()
	if handed != nil {
		waiter.writeNext(r, handed)
	}
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
		o, inv := r.invoke(item{ID: f.ID, Event: events.Bytes()}, f.TimeoutMs)
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
			out.Write(appendResultFrame(nil, "{", it.ID, each, inv))
		}
	} else { // one after another, each with its own logs, duration and error
		for i, it := range f.Items {
			if i > 0 {
				out.WriteByte(',')
			}
			o, inv := r.invoke(it, f.TimeoutMs)
			if o.err == nil {
				payload.Write(o.result)
			}
			out.Write(appendResultFrame(nil, "{", it.ID, o, inv))
		}
	}
	out.WriteString("]}")
	if payload.Len() == 0 { // no ok item (an ok result is never empty: at least `null`)
		_ = r.writeFrame(out.Bytes())
		return
	}
	_ = r.writeFrame(out.Bytes(), payload.Bytes())
}

func eventOrNull(event json.RawMessage) []byte {
	if len(event) == 0 {
		return []byte("null")
	}
	return event
}

func (r *relay) newInvocation(it item, timeoutMs int64, direct bool) *invocation {
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
	}
	if !direct {
		inv.done = make(chan outcome, 1)
	}
	inv.out.limit = r.cfg.MaxLogBytes
	return inv
}

// invoke runs one batch item: hands it to the runtime's next GET /invocation/next and waits for its answer.
func (r *relay) invoke(it item, timeoutMs int64) (outcome, *invocation) {
	inv := r.newInvocation(it, timeoutMs, false)
	r.mu.Lock()
	exited := r.childExited
	var waiter *httpConn
	var handed *invocation
	if !exited {
		r.pending = inv
		waiter = r.waiter
		handed = r.handOutLocked()
	}
	r.mu.Unlock()
	if exited {
		return r.exitOutcome(inv), inv
	}
	if handed != nil {
		waiter.writeNext(r, handed)
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

// finish delivers an invocation's answer: a single invoke's result goes to the host from here (the
// host first, the runtime's 202 after: the answer is on its way one hop sooner), a batch item's to
// the batch's loop.
func (r *relay) finish(inv *invocation, o outcome) {
	r.mu.Lock()
	if inv.settled { // the runtime exited meanwhile, and its exit was the answer
		r.mu.Unlock()
		return
	}
	inv.settled = true
	r.drainLocked()
	r.current = nil
	r.mu.Unlock()
	if !inv.direct {
		inv.done <- o
		return
	}
	_ = r.sendResult(inv.id, o, inv)
	r.mu.Lock()
	r.busy = false
	exited := r.childExited
	wake := r.idleWaiting
	r.idleWaiting = false
	r.mu.Unlock()
	if exited {
		os.Exit(0) // the runtime died during this call: the host has the answer, then a closed stream
	}
	if wake {
		r.idle <- struct{}{}
	}
}

func (r *relay) exitOutcome(inv *invocation) outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.drainLocked()
	if r.current == inv {
		r.current = nil
	}
	if r.pending == inv {
		r.pending = nil
	}
	message := fmt.Sprintf("RequestId: %s Error: Runtime exited with error: %s", inv.id, r.exitText)
	return outcome{err: errorObject("Runtime.ExitError", message, "")}
}
