// Command stoq-interop-peer is a QUIC echo peer built on quic-go (the 0.29
// line packaged by Debian). It is used to test STOQ against an independent
// QUIC implementation.
//
//	stoq-interop-peer server --listen HOST:PORT --cert CERT.pem --key KEY.pem [--alpn stoq/1]
//	stoq-interop-peer client --connect HOST:PORT [--alpn stoq/1] (--ca CA.pem | --insecure)
//	                         [--sni NAME] [--bytes N] [--streams K] [--datagrams D] [--uni]
//	stoq-interop-peer h3server --listen HOST:PORT --cert CERT.pem --key KEY.pem
//	                           [--h3-datagrams] [--setting ID=VALUE]...
//
// See README.md for the echo semantics and the output formats.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"log"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	quic "github.com/lucas-clemente/quic-go"
)

const (
	defaultALPN = "stoq/1"

	streamWindow = 16 << 20 // 16 MiB per stream
	connWindow   = 32 << 20 // 32 MiB per connection
	maxStreams   = 10000    // incoming bidi and uni stream limit
	idleTimeout  = 30 * time.Second

	// Application error codes used when closing connections.
	codeNoError      = 0x0
	codeALPNMismatch = 0x178 // mirrors CRYPTO_ERROR(no_application_protocol)

	uniPayloadSize = 64 << 10
)

var logger = log.New(os.Stderr, "stoq-interop-peer: ", log.Lmicroseconds)

func usage() {
	fmt.Fprintf(os.Stderr, `usage:
  %[1]s server --listen HOST:PORT --cert CERT.pem --key KEY.pem [--alpn stoq/1]
  %[1]s client --connect HOST:PORT [--alpn stoq/1] (--ca CA.pem | --insecure) [--sni NAME]
        [--bytes N] [--streams K] [--datagrams D] [--uni]
        [--datagram-size S] [--datagrams-min M] [--timeout 60s] [--cid-len L]
  %[1]s h3server --listen HOST:PORT --cert CERT.pem --key KEY.pem [--h3-datagrams]
        [--setting ID=VALUE]... [-v]
`, os.Args[0])
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	switch os.Args[1] {
	case "server":
		os.Exit(runServer(os.Args[2:]))
	case "client":
		os.Exit(runClient(os.Args[2:]))
	case "h3server":
		os.Exit(runH3Server(os.Args[2:]))
	case "-h", "--help", "help":
		usage()
		os.Exit(0)
	default:
		fmt.Fprintf(os.Stderr, "unknown mode %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
}

func quicConfig() *quic.Config {
	return &quic.Config{
		Versions:                       []quic.VersionNumber{quic.Version1},
		MaxIdleTimeout:                 idleTimeout,
		HandshakeIdleTimeout:           10 * time.Second,
		InitialStreamReceiveWindow:     streamWindow,
		MaxStreamReceiveWindow:         streamWindow,
		InitialConnectionReceiveWindow: connWindow,
		MaxConnectionReceiveWindow:     connWindow,
		MaxIncomingStreams:             maxStreams,
		MaxIncomingUniStreams:          maxStreams,
		EnableDatagrams:                true,
	}
}

// ---------------------------------------------------------------------------
// Deterministic pseudo-random pattern (xorshift64*).

type pattern struct{ s uint64 }

func newPattern(seed uint64) *pattern {
	// splitmix64 finaliser so that neighbouring seeds diverge immediately
	z := seed + 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	if z == 0 {
		z = 1
	}
	return &pattern{s: z}
}

func (p *pattern) fill(b []byte) {
	var tmp [8]byte
	for len(b) > 0 {
		p.s ^= p.s >> 12
		p.s ^= p.s << 25
		p.s ^= p.s >> 27
		binary.LittleEndian.PutUint64(tmp[:], p.s*0x2545f4914f6cdd1d)
		n := copy(b, tmp[:])
		b = b[n:]
	}
}

func patternBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	newPattern(seed).fill(b)
	return b
}

// ---------------------------------------------------------------------------
// Server

func runServer(args []string) int {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "UDP address to listen on (port 0 = ephemeral)")
	certFile := fs.String("cert", "", "PEM certificate chain")
	keyFile := fs.String("key", "", "PEM private key")
	alpn := fs.String("alpn", defaultALPN, "the only ALPN protocol accepted")
	verbose := fs.Bool("v", false, "log every stream")
	maxEchoDgram := fs.Int("max-echo-datagram", 0, "drop (do not echo) datagrams larger than this many bytes; 0 = echo all (see README: quic-go 0.29 IPv6 quirk)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *certFile == "" || *keyFile == "" {
		fmt.Fprintln(os.Stderr, "server: --cert and --key are required")
		return 2
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		logger.Printf("loading certificate: %v", err)
		return 1
	}
	tlsConf := &tls.Config{
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{*alpn},
		MinVersion:   tls.VersionTLS13,
	}
	ln, err := quic.ListenAddr(*listen, tlsConf, quicConfig())
	if err != nil {
		logger.Printf("listen %s: %v", *listen, err)
		return 1
	}
	port := ln.Addr().(*net.UDPAddr).Port
	fmt.Fprintf(os.Stdout, "LISTENING %d\n", port)
	_ = os.Stdout.Sync() // stdout is unbuffered in Go; Sync is best effort (fails on pipes)

	var (
		mu    sync.Mutex
		conns = map[quic.Connection]struct{}{}
	)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	shuttingDown := make(chan struct{})
	shutdownDone := make(chan struct{})
	go func() {
		s := <-sigs
		logger.Printf("received %v, shutting down", s)
		close(shuttingDown)
		mu.Lock()
		for c := range conns {
			_ = c.CloseWithError(codeNoError, "server shutting down")
		}
		mu.Unlock()
		_ = ln.Close()
		close(shutdownDone)
	}()

	for {
		conn, err := ln.Accept(context.Background())
		if err != nil {
			select {
			case <-shuttingDown:
				<-shutdownDone
				return 0
			default:
			}
			logger.Printf("accept: %v", err)
			return 1
		}
		mu.Lock()
		conns[conn] = struct{}{}
		mu.Unlock()
		go func() {
			serveConn(conn, *alpn, *verbose, *maxEchoDgram)
			mu.Lock()
			delete(conns, conn)
			mu.Unlock()
		}()
	}
}

func describeCloseErr(err error) string {
	var appErr *quic.ApplicationError
	if errors.As(err, &appErr) {
		side := "local"
		if appErr.Remote {
			side = "remote"
		}
		return fmt.Sprintf("application close code=%#x reason=%q (%s)", uint64(appErr.ErrorCode), appErr.ErrorMessage, side)
	}
	var tErr *quic.TransportError
	if errors.As(err, &tErr) {
		side := "local"
		if tErr.Remote {
			side = "remote"
		}
		return fmt.Sprintf("transport close %v (%s)", tErr, side)
	}
	return err.Error()
}

func serveConn(conn quic.Connection, alpn string, verbose bool, maxEchoDgram int) {
	remote := conn.RemoteAddr().String()
	state := conn.ConnectionState()
	// qtls (Go 1.19 fork) accepts clients that send no ALPN extension at all;
	// enforce the ALPN here so that only the configured protocol is served.
	if got := state.TLS.NegotiatedProtocol; got != alpn {
		logger.Printf("conn %s: negotiated ALPN %q != %q, closing", remote, got, alpn)
		_ = conn.CloseWithError(codeALPNMismatch, "no application protocol")
		return
	}
	logger.Printf("conn %s: accepted alpn=%q datagrams=%v", remote, state.TLS.NegotiatedProtocol, state.SupportsDatagrams)

	var wg sync.WaitGroup
	wg.Add(3)
	closeErr := make(chan error, 3)

	// bidirectional streams: streaming echo, then FIN
	go func() {
		defer wg.Done()
		for {
			str, err := conn.AcceptStream(context.Background())
			if err != nil {
				closeErr <- err
				return
			}
			go echoBidi(str, remote, verbose)
		}
	}()

	// unidirectional streams: read to FIN, then reply on a new uni stream
	go func() {
		defer wg.Done()
		for {
			rs, err := conn.AcceptUniStream(context.Background())
			if err != nil {
				closeErr <- err
				return
			}
			go echoUni(conn, rs, remote, verbose)
		}
	}()

	// datagrams: echo each one back
	go func() {
		defer wg.Done()
		for {
			msg, err := conn.ReceiveMessage()
			if err != nil {
				closeErr <- err
				return
			}
			if maxEchoDgram > 0 && len(msg) > maxEchoDgram {
				if verbose {
					logger.Printf("conn %s: not echoing %d-byte datagram (--max-echo-datagram %d)", remote, len(msg), maxEchoDgram)
				}
				continue
			}
			if err := conn.SendMessage(msg); err != nil {
				if conn.Context().Err() != nil {
					closeErr <- err
					return
				}
				// "message too large" (peer's max_datagram_frame_size) is not fatal
				logger.Printf("conn %s: echo datagram (%d bytes): %v", remote, len(msg), err)
			}
		}
	}()

	wg.Wait()
	logger.Printf("conn %s: closed: %s", remote, describeCloseErr(<-closeErr))
}

func echoBidi(str quic.Stream, remote string, verbose bool) {
	id := str.StreamID()
	buf := make([]byte, 64<<10)
	var total int64
	for {
		n, rerr := str.Read(buf)
		if n > 0 {
			if _, werr := str.Write(buf[:n]); werr != nil {
				var se *quic.StreamError
				if errors.As(werr, &se) {
					// peer sent STOP_SENDING: stop reading too
					str.CancelRead(se.ErrorCode)
				}
				logger.Printf("conn %s: stream %d: write: %v", remote, id, werr)
				return
			}
			total += int64(n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			var se *quic.StreamError
			if errors.As(rerr, &se) {
				// peer reset its send side: reset ours with the same code
				str.CancelWrite(se.ErrorCode)
			}
			logger.Printf("conn %s: stream %d: read: %v", remote, id, rerr)
			return
		}
	}
	if err := str.Close(); err != nil { // FIN on our send side
		logger.Printf("conn %s: stream %d: close: %v", remote, id, err)
		return
	}
	if verbose {
		logger.Printf("conn %s: bidi stream %d echoed %d bytes", remote, id, total)
	}
}

func echoUni(conn quic.Connection, rs quic.ReceiveStream, remote string, verbose bool) {
	id := rs.StreamID()
	data, err := ioutil.ReadAll(rs)
	if err != nil {
		logger.Printf("conn %s: uni stream %d: read: %v", remote, id, err)
		return
	}
	ss, err := conn.OpenUniStreamSync(conn.Context())
	if err != nil {
		logger.Printf("conn %s: open uni stream: %v", remote, err)
		return
	}
	if _, err := ss.Write(data); err != nil {
		logger.Printf("conn %s: uni stream %d: write: %v", remote, ss.StreamID(), err)
		return
	}
	if err := ss.Close(); err != nil {
		logger.Printf("conn %s: uni stream %d: close: %v", remote, ss.StreamID(), err)
		return
	}
	if verbose {
		logger.Printf("conn %s: uni stream %d (%d bytes) echoed on uni stream %d", remote, id, len(data), ss.StreamID())
	}
}

// ---------------------------------------------------------------------------
// Client

type clientResult struct {
	OK                   bool   `json:"ok"`
	ALPN                 string `json:"alpn"`
	Bytes                int64  `json:"bytes"`
	BytesVerified        bool   `json:"bytesVerified"`
	Streams              int    `json:"streams"`
	StreamsOK            int    `json:"streamsOk"`
	Uni                  bool   `json:"uni"`
	UniOK                bool   `json:"uniOk"`
	DatagramsSent        int    `json:"datagramsSent"`
	DatagramsEchoed      int    `json:"datagramsEchoed"`
	DatagramTransmission int    `json:"datagramTransmissions"`
	HandshakeMs          int64  `json:"handshakeMs"`
	ElapsedMs            int64  `json:"elapsedMs"`
}

type clientFailure struct {
	OK        bool   `json:"ok"`
	Error     string `json:"error"`
	Stage     string `json:"stage"`
	ElapsedMs int64  `json:"elapsedMs"`
}

var (
	outputOnce sync.Once
	startTime  = time.Now()

	activeMu   sync.Mutex
	activeConn quic.Connection // closed with an error code by fail()
)

func setActiveConn(c quic.Connection) {
	activeMu.Lock()
	activeConn = c
	activeMu.Unlock()
}

func emit(v interface{}, code int) {
	outputOnce.Do(func() {
		b, _ := json.Marshal(v)
		os.Stdout.Write(append(b, '\n'))
		os.Exit(code)
	})
	// another goroutine is already emitting; wait for it to exit the process
	select {}
}

func fail(stage string, format string, a ...interface{}) {
	activeMu.Lock()
	c := activeConn
	activeConn = nil
	activeMu.Unlock()
	if c != nil {
		// Tell the peer why we are leaving (application error 0x1), but never
		// let a stuck connection delay the report.
		done := make(chan struct{})
		go func() { _ = c.CloseWithError(0x1, "interop client: "+stage+" failed"); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Second):
		}
	}
	emit(clientFailure{
		OK:        false,
		Error:     fmt.Sprintf(format, a...),
		Stage:     stage,
		ElapsedMs: time.Since(startTime).Milliseconds(),
	}, 1)
}

func runClient(args []string) int {
	startTime = time.Now()
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	connect := fs.String("connect", "", "server address HOST:PORT (IPv6 as [::1]:PORT)")
	alpn := fs.String("alpn", defaultALPN, "ALPN protocol to request")
	caFile := fs.String("ca", "", "PEM CA certificate(s) used to verify the server")
	insecure := fs.Bool("insecure", false, "do not verify the server certificate")
	sni := fs.String("sni", "", "TLS server name (default: host part of --connect)")
	nBytes := fs.Int64("bytes", 0, "bytes to echo on a single bidi stream")
	nStreams := fs.Int("streams", 0, "number of concurrent bidi streams (stream i carries 1000+i bytes)")
	nDgrams := fs.Int("datagrams", 0, "number of datagrams to echo")
	dgSize := fs.Int("datagram-size", 100, "datagram payload size (>= 16)")
	dgMin := fs.Int("datagrams-min", -1, "minimum echoed datagrams for success (default: all)")
	uni := fs.Bool("uni", false, "test unidirectional stream echo (64 KiB)")
	timeout := fs.Duration("timeout", 60*time.Second, "overall timeout")
	cidLen := fs.Int("cid-len", 8, "client source connection ID length (0 = zero-length CIDs, else 4..20)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *connect == "" {
		fmt.Fprintln(os.Stderr, "client: --connect is required")
		return 2
	}
	if *caFile == "" && !*insecure {
		fmt.Fprintln(os.Stderr, "client: one of --ca or --insecure is required")
		return 2
	}
	if *dgSize < 16 {
		fmt.Fprintln(os.Stderr, "client: --datagram-size must be >= 16")
		return 2
	}
	if *cidLen != 0 && (*cidLen < 4 || *cidLen > 20) {
		fmt.Fprintln(os.Stderr, "client: --cid-len must be 0 or 4..20")
		return 2
	}
	if *dgMin < 0 || *dgMin > *nDgrams {
		*dgMin = *nDgrams
	}

	time.AfterFunc(*timeout, func() { fail("timeout", "overall timeout of %v exceeded", *timeout) })
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	tlsConf := &tls.Config{
		NextProtos:         []string{*alpn},
		ServerName:         *sni,
		InsecureSkipVerify: *insecure,
		MinVersion:         tls.VersionTLS13,
	}
	if *caFile != "" {
		pem, err := ioutil.ReadFile(*caFile)
		if err != nil {
			fail("setup", "reading CA file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			fail("setup", "no certificates found in %s", *caFile)
		}
		tlsConf.RootCAs = pool
	}

	cfg := quicConfig()
	var (
		conn  quic.Connection
		pconn *net.UDPConn
		err   error
	)
	if *cidLen == 0 {
		// quic-go uses zero-length client connection IDs when it owns the socket.
		conn, err = quic.DialAddrContext(ctx, *connect, tlsConf, cfg)
	} else {
		raddr, rerr := net.ResolveUDPAddr("udp", *connect)
		if rerr != nil {
			fail("setup", "resolving %s: %v", *connect, rerr)
		}
		network, laddr := "udp6", &net.UDPAddr{IP: net.IPv6unspecified}
		if raddr.IP.To4() != nil {
			network, laddr = "udp4", &net.UDPAddr{IP: net.IPv4zero}
		}
		pconn, err = net.ListenUDP(network, laddr)
		if err != nil {
			fail("setup", "binding UDP socket: %v", err)
		}
		cfg.ConnectionIDLength = *cidLen
		// host is passed as HOST:PORT so quic-go strips the port (and IPv6 brackets) for SNI.
		conn, err = quic.DialContext(ctx, pconn, raddr, *connect, tlsConf, cfg)
	}
	if err != nil {
		fail("handshake", "handshake with %s failed: %s", *connect, describeCloseErr(err))
	}
	setActiveConn(conn)
	res := clientResult{HandshakeMs: time.Since(startTime).Milliseconds()}
	failConn := fail

	state := conn.ConnectionState()
	res.ALPN = state.TLS.NegotiatedProtocol
	if res.ALPN != *alpn {
		failConn("alpn", "negotiated ALPN %q, requested %q", res.ALPN, *alpn)
	}

	// (a) one large bidi stream
	if *nBytes > 0 {
		res.Bytes = *nBytes
		if err := bulkEcho(ctx, conn, *nBytes); err != nil {
			failConn("bytes", "%v", err)
		}
		res.BytesVerified = true
	}

	// (b) K concurrent bidi streams
	if *nStreams > 0 {
		res.Streams = *nStreams
		okCount, firstErr := manyStreams(ctx, conn, *nStreams)
		res.StreamsOK = okCount
		if okCount != *nStreams {
			failConn("streams", "%d/%d streams verified; first error: %v", okCount, *nStreams, firstErr)
		}
	}

	// (c) unidirectional echo
	if *uni {
		res.Uni = true
		if err := uniEcho(ctx, conn); err != nil {
			failConn("uni", "%v", err)
		}
		res.UniOK = true
	}

	// (d) datagrams
	if *nDgrams > 0 {
		if !conn.ConnectionState().SupportsDatagrams {
			failConn("datagrams", "server did not advertise max_datagram_frame_size (datagrams unsupported)")
		}
		echoed, tx, err := datagramEcho(ctx, conn, *nDgrams, *dgSize)
		res.DatagramsSent = *nDgrams
		res.DatagramsEchoed = echoed
		res.DatagramTransmission = tx
		if err != nil {
			failConn("datagrams", "%v", err)
		}
		if echoed < *dgMin {
			failConn("datagrams", "only %d/%d datagrams echoed (minimum %d)", echoed, *nDgrams, *dgMin)
		}
	}

	setActiveConn(nil)
	_ = conn.CloseWithError(codeNoError, "")
	if pconn != nil {
		_ = pconn.Close()
	}
	res.OK = true
	res.ElapsedMs = time.Since(startTime).Milliseconds()
	emit(res, 0)
	return 0
}

func bulkEcho(ctx context.Context, conn quic.Connection, n int64) error {
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return fmt.Errorf("open stream: %w", err)
	}
	sentHash := sha256.New()
	writeErr := make(chan error, 1)
	go func() {
		p := newPattern(0x5704)
		buf := make([]byte, 64<<10)
		remaining := n
		for remaining > 0 {
			chunk := buf
			if int64(len(chunk)) > remaining {
				chunk = chunk[:remaining]
			}
			p.fill(chunk)
			sentHash.Write(chunk)
			if _, err := str.Write(chunk); err != nil {
				writeErr <- fmt.Errorf("write after %d bytes: %w", n-remaining, err)
				return
			}
			remaining -= int64(len(chunk))
		}
		writeErr <- str.Close()
	}()
	recvHash := sha256.New()
	got, rerr := io.Copy(recvHash, str)
	werr := <-writeErr
	if werr != nil {
		return werr
	}
	if rerr != nil {
		return fmt.Errorf("read after %d echoed bytes: %w", got, rerr)
	}
	if got != n {
		return fmt.Errorf("echo length mismatch: sent %d, received %d", n, got)
	}
	s, r := sentHash.Sum(nil), recvHash.Sum(nil)
	if !bytes.Equal(s, r) {
		return fmt.Errorf("echo content mismatch: sent sha256 %s, received %s", hex.EncodeToString(s), hex.EncodeToString(r))
	}
	return nil
}

func manyStreams(ctx context.Context, conn quic.Connection, k int) (int, error) {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		okCount  int
		firstErr error
	)
	record := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if err == nil {
			okCount++
		} else if firstErr == nil {
			firstErr = err
		}
	}
	for i := 0; i < k; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			want := patternBytes(uint64(1000000+i), 1000+i)
			str, err := conn.OpenStreamSync(ctx)
			if err != nil {
				record(fmt.Errorf("stream #%d: open: %w", i, err))
				return
			}
			if _, err := str.Write(want); err != nil {
				record(fmt.Errorf("stream #%d (id %d): write: %w", i, str.StreamID(), err))
				return
			}
			if err := str.Close(); err != nil {
				record(fmt.Errorf("stream #%d (id %d): close: %w", i, str.StreamID(), err))
				return
			}
			got, err := ioutil.ReadAll(str)
			if err != nil {
				record(fmt.Errorf("stream #%d (id %d): read: %w", i, str.StreamID(), err))
				return
			}
			if !bytes.Equal(got, want) {
				record(fmt.Errorf("stream #%d (id %d): echo mismatch (sent %d bytes, got %d)", i, str.StreamID(), len(want), len(got)))
				return
			}
			record(nil)
		}(i)
	}
	wg.Wait()
	return okCount, firstErr
}

func uniEcho(ctx context.Context, conn quic.Connection) error {
	want := patternBytes(0xC0FFEE, uniPayloadSize)
	ss, err := conn.OpenUniStreamSync(ctx)
	if err != nil {
		return fmt.Errorf("open uni stream: %w", err)
	}
	if _, err := ss.Write(want); err != nil {
		return fmt.Errorf("uni write: %w", err)
	}
	if err := ss.Close(); err != nil {
		return fmt.Errorf("uni close: %w", err)
	}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rs, err := conn.AcceptUniStream(actx)
	if err != nil {
		return fmt.Errorf("waiting for the server's uni stream: %w", err)
	}
	got, err := ioutil.ReadAll(rs)
	if err != nil {
		return fmt.Errorf("uni read (stream %d): %w", rs.StreamID(), err)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("uni echo mismatch on stream %d: sent %d bytes, got %d", rs.StreamID(), len(want), len(got))
	}
	return nil
}

// Datagram layout: "SDG1" | uint32 index | uint64 run nonce | pattern bytes.
func datagramPayload(nonce uint64, idx, size int) []byte {
	b := make([]byte, size)
	copy(b, "SDG1")
	binary.BigEndian.PutUint32(b[4:8], uint32(idx))
	binary.BigEndian.PutUint64(b[8:16], nonce)
	newPattern(nonce ^ uint64(idx)<<20).fill(b[16:])
	return b
}

func datagramEcho(ctx context.Context, conn quic.Connection, d, size int) (echoed, transmissions int, err error) {
	nonce := uint64(time.Now().UnixNano())
	payloads := make([][]byte, d)
	for i := range payloads {
		payloads[i] = datagramPayload(nonce, i, size)
	}
	var (
		mu       sync.Mutex
		received = make([]bool, d)
		count    int
		bad      int
		badDesc  string
		allDone  = make(chan struct{})
	)
	go func() {
		for {
			msg, err := conn.ReceiveMessage()
			if err != nil {
				return
			}
			mu.Lock()
			ok := len(msg) >= 16 && string(msg[:4]) == "SDG1" && binary.BigEndian.Uint64(msg[8:16]) == nonce
			if ok {
				idx := int(binary.BigEndian.Uint32(msg[4:8]))
				if idx < d && bytes.Equal(msg, payloads[idx]) {
					if !received[idx] {
						received[idx] = true
						count++
						if count == d {
							close(allDone)
						}
					}
				} else {
					ok = false
				}
			}
			if !ok {
				bad++
				if badDesc == "" {
					badDesc = fmt.Sprintf("%d-byte datagram with unexpected content (prefix %x)", len(msg), msg[:minInt(len(msg), 16)])
				}
			}
			mu.Unlock()
		}
	}()

	const rounds = 5
	deadline := time.Now().Add(5 * time.Second)
	for round := 0; round < rounds && time.Now().Before(deadline); round++ {
		for i := 0; i < d; i++ {
			mu.Lock()
			done := received[i]
			mu.Unlock()
			if done {
				continue
			}
			if err := conn.SendMessage(payloads[i]); err != nil {
				return count, transmissions, fmt.Errorf("sending datagram %d (%d bytes): %w", i, size, err)
			}
			transmissions++
		}
		wait := time.Until(deadline) / time.Duration(rounds-round)
		select {
		case <-allDone:
			round = rounds
		case <-time.After(wait):
		case <-ctx.Done():
			return count, transmissions, ctx.Err()
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if bad > 0 {
		return count, transmissions, fmt.Errorf("%d corrupted/unexpected datagram echoes, first: %s", bad, badDesc)
	}
	return count, transmissions, nil
}

func minInt(a, b int) int {
	if a < b {
		return a
	}
	return b
}
