// Ferry's test vCenter: a launcher for the vSphere simulator library ("simulator" package of
// govmomi, as Debian's golang-github-vmware-govmomi-dev ships it; that package has no vcsim
// command of its own). scripts/vcsim.sh builds it offline in GOPATH mode and starts it.
//
// It builds an inventory from counts, serves the vSphere Web Services API (SOAP on /sdk) and
// datastore HTTP (/folder) on a loopback address, writes a pidfile and an env file once it
// answers, and runs until SIGTERM or SIGINT, when it closes the server, removes the datastore
// folders it made and exits 0.
//
// VM count: the library puts -vm powered-on VMs into each cluster's root resource pool and into
// each standalone host, so VMs = dc * (cluster + standalone-host) * vm. -host (hosts per cluster)
// and -pool (extra, empty child pools) do not multiply it.
package main

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
)

// Upper bounds keep a typo (an extra zero) from eating the test machine's memory.
const (
	maxVMs      = 100000
	maxHosts    = 10000
	maxPerCount = 10000
)

type counts struct {
	dc, cluster, host, standalone, vm, ds, pool, folder int
}

func (c counts) vms() int   { return c.dc * (c.cluster + c.standalone) * c.vm }
func (c counts) hosts() int { return c.dc * (c.cluster*c.host + c.standalone) }

func (c counts) check() error {
	named := []struct {
		name string
		v    int
	}{{"dc", c.dc}, {"cluster", c.cluster}, {"host", c.host}, {"standalone-host", c.standalone},
		{"vm", c.vm}, {"ds", c.ds}, {"pool", c.pool}, {"folder", c.folder}}
	for _, n := range named {
		if n.v < 0 || n.v > maxPerCount {
			return fmt.Errorf("-%s %d: must be between 0 and %d", n.name, n.v, maxPerCount)
		}
	}
	if c.dc < 1 {
		return fmt.Errorf("-dc %d: at least one datacenter is needed", c.dc)
	}
	if c.ds < 1 {
		// The library places every VM on LocalDS_0; without it VM creation fails late and obscurely.
		return fmt.Errorf("-ds %d: at least one datastore is needed", c.ds)
	}
	if c.hosts() > maxHosts {
		return fmt.Errorf("%d hosts: at most %d", c.hosts(), maxHosts)
	}
	if c.vms() > maxVMs {
		return fmt.Errorf("%d VMs (dc*(cluster+standalone-host)*vm): at most %d", c.vms(), maxVMs)
	}
	return nil
}

// checkLoopback refuses any listen address but a loopback IP: the tests talk only to this machine.
func checkLoopback(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-l %q: %v", addr, err)
	}
	if host == "localhost" {
		return fmt.Errorf("-l %q: give a loopback IP (127.0.0.1 or ::1), not a name", addr)
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-l %q: only loopback addresses are allowed", addr)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("-l %q: bad port: %v", addr, err)
	}
	return nil
}

// colonHex formats a digest the way vSphere shows certificate thumbprints: AB:CD:...
func colonHex(sum []byte) string {
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

// writeAtomic writes via a temporary file and a rename, so a reader polling for the file never
// sees half of it.
func writeAtomic(path, text string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("vcsim: ")

	var c counts
	listen := flag.String("l", "127.0.0.1:0", "listen address, loopback only (port 0: a free port)")
	esx := flag.Bool("esx", false, "one standalone ESXi instead of a vCenter (ignores the inventory counts but -vm and -ds)")
	flag.IntVar(&c.dc, "dc", 1, "datacenters")
	flag.IntVar(&c.cluster, "cluster", 1, "clusters per datacenter")
	flag.IntVar(&c.host, "host", 2, "hosts per cluster")
	flag.IntVar(&c.standalone, "standalone-host", 0, "standalone hosts per datacenter")
	flag.IntVar(&c.vm, "vm", 2, "powered-on VMs per cluster root pool and per standalone host")
	flag.IntVar(&c.ds, "ds", 1, "local datastores (each a folder under -datastore-dir)")
	flag.IntVar(&c.pool, "pool", 0, "extra (empty) child resource pools per cluster")
	flag.IntVar(&c.folder, "folder", 0, "datacenters placed in their own folder")
	useTLS := flag.Bool("tls", true, "serve https (false: plain http)")
	cert := flag.String("tlscert", "", "PEM certificate; empty: the library's built-in RSA-1024 test certificate")
	key := flag.String("tlskey", "", "PEM private key of -tlscert")
	user := flag.String("username", "", "the only user name that logs in (empty: any non-empty name and password)")
	pass := flag.String("password", "", "the password of -username")
	passFile := flag.String("password-file", "", "read the password of -username from this file (first line)")
	trace := flag.Bool("trace", false, "log every SOAP request and response")
	traceFile := flag.String("trace-file", "", "where -trace writes (default: stderr)")
	dsDir := flag.String("datastore-dir", "", "folder for the datastore folders (default: $TMPDIR)")
	pidFile := flag.String("pidfile", "", "write the process id here once serving; removed at exit")
	envFile := flag.String("envfile", "", "write VCSIM_* lines here once serving (atomically)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: %s [flags] | selftest\n"+
			"VMs = dc * (cluster + standalone-host) * vm\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()

	if flag.NArg() == 1 && flag.Arg(0) == "selftest" {
		fmt.Println("ok")
		return
	}
	if flag.NArg() > 0 {
		log.Fatalf("unexpected arguments: %q", flag.Args())
	}
	if err := c.check(); err != nil {
		log.Fatal(err)
	}
	if err := checkLoopback(*listen); err != nil {
		log.Fatal(err)
	}
	if (*cert == "") != (*key == "") {
		log.Fatal("-tlscert and -tlskey go together")
	}
	if *passFile != "" {
		if *pass != "" {
			log.Fatal("give -password or -password-file, not both")
		}
		b, err := os.ReadFile(*passFile)
		if err != nil {
			log.Fatalf("password file: %v", err)
		}
		*pass = strings.SplitN(string(b), "\n", 2)[0]
	}
	if *user == "" && *pass != "" {
		log.Fatal("-password needs -username")
	}
	if *user != "" && *pass == "" {
		log.Fatal("-username needs a non-empty password")
	}

	// Registered before the inventory is built: a large one takes seconds, and a SIGTERM in that
	// time must still end in the cleanup below rather than leave datastore folders behind.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)

	if *dsDir != "" {
		// The library makes its datastore folders with ioutil.TempDir(""), which reads $TMPDIR.
		if err := os.MkdirAll(*dsDir, 0o700); err != nil {
			log.Fatalf("datastore dir: %v", err)
		}
		if err := os.Setenv("TMPDIR", *dsDir); err != nil {
			log.Fatalf("datastore dir: %v", err)
		}
	}

	// Loaded before the inventory is built, so a bad certificate fails at once.
	var pair *tls.Certificate
	if *useTLS && *cert != "" {
		p, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			log.Fatalf("load certificate: %v", err)
		}
		pair = &p
	}

	model := simulator.VPX()
	if *esx {
		model = simulator.ESX()
	} else {
		model.Datacenter, model.Cluster, model.ClusterHost = c.dc, c.cluster, c.host
		model.Host, model.Pool, model.Folder = c.standalone, c.pool, c.folder
	}
	model.Machine, model.Datastore = c.vm, c.ds
	model.Autostart = true

	t0 := time.Now()
	if err := model.Create(); err != nil {
		model.Remove()
		log.Fatalf("create inventory: %v", err)
	}
	addExtensionManager(model.ServiceContent)
	n := model.Count()
	log.Printf("inventory: %d VMs, %d hosts, %d datastores in %.2fs",
		n.Machine, n.Host, n.Datastore, time.Since(t0).Seconds())

	svc := model.Service
	if err := installProcessGuest(svc, *useTLS); err != nil {
		model.Remove()
		log.Fatalf("guest operations: %v", err)
	}
	svc.Listen = &url.URL{Host: *listen}
	if *user != "" {
		svc.Listen.User = url.UserPassword(*user, *pass)
	}
	if *useTLS {
		svc.TLS = new(tls.Config)
		if pair != nil {
			svc.TLS.Certificates = []tls.Certificate{*pair}
		}
	}
	if *trace {
		simulator.Trace = true
		if *traceFile != "" {
			f, err := os.Create(*traceFile)
			if err != nil {
				model.Remove()
				log.Fatalf("trace file: %v", err)
			}
			simulator.TraceFile = f
		}
	}

	server := svc.NewServer()
	u := *server.URL
	u.User = nil // the env file carries no credentials
	env := fmt.Sprintf("VCSIM_URL=%s\nVCSIM_PORT=%s\nVCSIM_PID=%d\n", u.String(), u.Port(), os.Getpid())
	thumbs := "VCSIM_THUMBPRINT=\nVCSIM_THUMBPRINT_SHA256=\n"
	if *useTLS {
		der := server.Certificate().Raw
		s1, s256 := sha1.Sum(der), sha256.Sum256(der)
		thumbs = fmt.Sprintf("VCSIM_THUMBPRINT=%s\nVCSIM_THUMBPRINT_SHA256=%s\n", colonHex(s1[:]), colonHex(s256[:]))
		reportHostThumbprint(colonHex(s1[:]))
	}
	env += thumbs

	exit := 0
	if *pidFile != "" {
		if err := writeAtomic(*pidFile, fmt.Sprintf("%d\n", os.Getpid())); err != nil {
			log.Printf("pidfile: %v", err)
			exit = 1
		}
	}
	if exit == 0 && *envFile != "" {
		if err := writeAtomic(*envFile, env); err != nil {
			log.Printf("env file: %v", err)
			exit = 1
		}
	}
	if exit == 0 {
		log.Printf("serving %s (pid %d)", u.String(), os.Getpid())
		fmt.Print(env)
		sig := <-stop
		log.Printf("%v: stopping", sig)
	}

	// Long polls (a client's WaitForUpdatesEx) would hold Close for their whole wait.
	server.CloseClientConnections()
	server.Close()
	model.Remove()
	if *pidFile != "" {
		_ = os.Remove(*pidFile)
	}
	if *dsDir != "" {
		// Model.Remove deletes the datastore folders; the parent goes too once it is empty.
		_ = os.Remove(filepath.Clean(*dsDir))
	}
	os.Exit(exit)
}
