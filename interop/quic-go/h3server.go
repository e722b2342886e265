package main

// h3server mode: quic-go's own HTTP/3 server (http3.Server). It opens its
// control stream and sends SETTINGS as soon as it accepts a connection, before
// the client has sent anything: a server that speaks first.

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/lucas-clemente/quic-go/http3"
)

// h3HelloBody is the exact body of GET /hello.
const h3HelloBody = "hello from quic-go http3\n"

// settingFlags collects repeated --setting ID=VALUE flags.
type settingFlags map[uint64]uint64

func (s settingFlags) String() string {
	parts := make([]string, 0, len(s))
	for id, v := range s {
		parts = append(parts, fmt.Sprintf("%#x=%d", id, v))
	}
	return strings.Join(parts, ",")
}

func (s settingFlags) Set(arg string) error {
	eq := strings.IndexByte(arg, '=')
	if eq < 0 {
		return fmt.Errorf("expected ID=VALUE, got %q", arg)
	}
	id, err := strconv.ParseUint(arg[:eq], 0, 62)
	if err != nil {
		return fmt.Errorf("setting ID %q: %v", arg[:eq], err)
	}
	val, err := strconv.ParseUint(arg[eq+1:], 0, 62)
	if err != nil {
		return fmt.Errorf("setting value %q: %v", arg[eq+1:], err)
	}
	if _, dup := s[id]; dup {
		return fmt.Errorf("setting %#x given twice", id)
	}
	s[id] = val
	return nil
}

func h3Handler(verbose bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", "GET")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", strconv.Itoa(len(h3HelloBody)))
		_, _ = io.WriteString(w, h3HelloBody)
		if verbose {
			logger.Printf("h3 %s: GET /hello", r.RemoteAddr)
		}
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusOK)
		n, err := io.Copy(w, r.Body)
		if err != nil {
			logger.Printf("h3 %s: POST /echo: after %d bytes: %v", r.RemoteAddr, n, err)
			return
		}
		if verbose {
			logger.Printf("h3 %s: POST /echo echoed %d bytes", r.RemoteAddr, n)
		}
	})
	return mux
}

func runH3Server(args []string) int {
	fs := flag.NewFlagSet("h3server", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "UDP address to listen on (port 0 = ephemeral)")
	certFile := fs.String("cert", "", "PEM certificate chain")
	keyFile := fs.String("key", "", "PEM private key")
	datagrams := fs.Bool("h3-datagrams", false, "enable HTTP/3 datagrams (quic-go 0.29 announces the draft setting 0xffd277)")
	verbose := fs.Bool("v", false, "log every request")
	extra := settingFlags{}
	fs.Var(extra, "setting", "extra SETTINGS entry ID=VALUE (repeatable; decimal or 0x hex)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *certFile == "" || *keyFile == "" {
		fmt.Fprintln(os.Stderr, "h3server: --cert and --key are required")
		return 2
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		logger.Printf("loading certificate: %v", err)
		return 1
	}
	addr, err := net.ResolveUDPAddr("udp", *listen)
	if err != nil {
		logger.Printf("resolving %s: %v", *listen, err)
		return 1
	}
	pconn, err := net.ListenUDP("udp", addr)
	if err != nil {
		logger.Printf("listen %s: %v", *listen, err)
		return 1
	}
	srv := &http3.Server{
		// http3.ConfigureTLSConfig (called by Serve) sets the ALPN to h3.
		TLSConfig:       &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13},
		QuicConfig:      quicConfig(),
		Handler:         h3Handler(*verbose),
		EnableDatagrams: *datagrams,
	}
	if len(extra) > 0 {
		srv.AdditionalSettings = extra
	}
	fmt.Fprintf(os.Stdout, "LISTENING %d\n", pconn.LocalAddr().(*net.UDPAddr).Port)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	stopped := make(chan struct{})
	go func() {
		s := <-sigs
		logger.Printf("received %v, shutting down", s)
		close(stopped)
		_ = srv.Close()
		_ = pconn.Close()
	}()

	err = srv.Serve(pconn)
	select {
	case <-stopped:
		return 0
	default:
	}
	logger.Printf("http3 serve: %v", err)
	return 1
}
