// A process-backed guest for vSphere guest operations, opt-in with -guest-user and -guest-password.
//
// vcsim's own guest operations need a Docker-backed VM (a container per VM), and no Docker engine
// runs on the test machine. This stands in for a VM's guest instead: it is THIS MACHINE, reached as
// the launcher's own user. Every VM of the inventory shares it; nothing is isolated per VM. It only
// exists so that a client's guest-operations flow (start a program, wait for it, copy files in and
// out) can be tested end to end without a real ESXi host.
//
//	StartProgramInGuest           runs `/bin/sh -c '"<programPath>" <arguments>'` (how VMware Tools on
//	                              Linux starts a program) in workingDirectory with envVariables added
//	ListProcessesInGuest          the programs it started (kept 5 minutes after they end, as Tools
//	                              does): pid, name, owner, cmdLine, startTime, endTime, exitCode
//	InitiateFileTransferToGuest   a one-time URL on this server (host "*", as vSphere sends it); a
//	                              PUT of exactly fileSize bytes writes the file, honouring overwrite
//	                              and the posix permissions, owner and group
//	InitiateFileTransferFromGuest a one-time URL to GET the file, with its size and posix attributes
//
// Faults as vSphere gives them: a powered-off VM is InvalidPowerState, a VM whose Tools do not run
// is GuestOperationsUnavailable, credentials other than the flags' are InvalidGuestLogin, a missing
// file or folder is FileNotFound, an existing file without overwrite is FileAlreadyExists.
package main

import (
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

var (
	guestUser     = flag.String("guest-user", "", "enable the process-backed guest (this machine, as the launcher's user) for guest operations, logging in as this user")
	guestPassword = flag.String("guest-password", "", "the password of -guest-user")
	// Real vSphere hands out transfer URLs on the VM's ESXi host, which has a certificate of its own.
	// With a name here (localhost: this same server under another name), the URLs name it instead of
	// "*", and every host reports this server's SHA-1 as its summary.config.sslThumbprint, so a
	// client must check the transfer against the host's thumbprint, not the vCenter's pin.
	guestHostThumbprint = flag.String("guest-host-thumbprint", "", "with -guest-transfer-host: the thumbprint hosts report instead of this server's SHA-1 (a wrong one tests that clients enforce it)")
	guestTransferHost   = flag.String("guest-transfer-host", "*", "host name transfer URLs carry (\"*\": the client's vCenter host, as vSphere sends it by default)")
)

const (
	guestTransferPrefix = "/ferry-guest-file/"
	// How long an unused transfer URL stays valid, and an ended process stays listed.
	guestTransferTTL = 10 * time.Minute
	guestProcessKeep = 5 * time.Minute
)

type guestTransfer struct {
	path      string
	upload    bool
	size      int64
	overwrite bool
	attrs     *types.GuestPosixFileAttributes
	expires   time.Time
}

type guestProcess struct {
	info  types.GuestProcessInfo
	ended bool
}

// processGuest holds the state shared by the file and process managers and the transfer handler.
type processGuest struct {
	user, password string
	scheme         string

	mu        sync.Mutex
	transfers map[string]*guestTransfer
	processes map[int64]*guestProcess
}

type processGuestFileManager struct {
	simulator.GuestFileManager
	g *processGuest
}

type processGuestProcessManager struct {
	simulator.GuestProcessManager
	g *processGuest
}

// installProcessGuest replaces the simulator's guest managers and registers the transfer handler,
// when -guest-user is given. Called after the inventory exists and before the server starts.
func installProcessGuest(svc *simulator.Service, useTLS bool) error {
	if *guestUser == "" && *guestPassword == "" {
		return nil
	}
	if *guestUser == "" || *guestPassword == "" {
		return fmt.Errorf("-guest-user and -guest-password go together, both non-empty")
	}
	g := &processGuest{
		user:      *guestUser,
		password:  *guestPassword,
		scheme:    "http",
		transfers: map[string]*guestTransfer{},
		processes: map[int64]*guestProcess{},
	}
	if useTLS {
		g.scheme = "https"
	}
	si, ok := simulator.Map.Get(serviceInstance).(*simulator.ServiceInstance)
	if !ok || si.Content.GuestOperationsManager == nil {
		return fmt.Errorf("the inventory has no guest operations manager")
	}
	ops, ok := simulator.Map.Get(*si.Content.GuestOperationsManager).(*simulator.GuestOperationsManager)
	if !ok || ops.FileManager == nil || ops.ProcessManager == nil {
		return fmt.Errorf("the inventory has no guest file and process managers")
	}
	fm := &processGuestFileManager{g: g}
	fm.Self = *ops.FileManager
	simulator.Map.Put(fm)
	pm := &processGuestProcessManager{g: g}
	pm.Self = *ops.ProcessManager
	simulator.Map.Put(pm)
	// Tools "runs" in every VM: the guest is there whenever a VM is powered on.
	for _, e := range simulator.Map.All("VirtualMachine") {
		vm := e.(*simulator.VirtualMachine)
		simulator.Map.WithLock(vm, func() {
			vm.Guest.ToolsRunningStatus = string(types.VirtualMachineToolsRunningStatusGuestToolsRunning)
			vm.Guest.ToolsStatus = types.VirtualMachineToolsStatusToolsOk
			if vm.Summary.Guest != nil {
				vm.Summary.Guest.ToolsStatus = types.VirtualMachineToolsStatusToolsOk
			}
		})
	}
	svc.HandleFunc(guestTransferPrefix, g.serveTransfer)
	log.Printf("guest operations: process-backed guest on this machine, user %q", g.user)
	return nil
}

var serviceInstance = types.ManagedObjectReference{Type: "ServiceInstance", Value: "ServiceInstance"}

// check answers what vSphere answers before a guest operation runs: power state, Tools, login.
func (g *processGuest) check(ctx *simulator.Context, ref types.ManagedObjectReference, auth types.BaseGuestAuthentication) types.BaseMethodFault {
	obj, ok := ctx.Map.Get(ref).(*simulator.VirtualMachine)
	if !ok {
		return &types.ManagedObjectNotFound{Obj: ref}
	}
	var power types.VirtualMachinePowerState
	var tools string
	ctx.Map.WithLock(obj, func() {
		power = obj.Runtime.PowerState
		if obj.Guest != nil {
			tools = obj.Guest.ToolsRunningStatus
		}
	})
	if power != types.VirtualMachinePowerStatePoweredOn {
		return &types.InvalidPowerState{
			RequestedState: types.VirtualMachinePowerStatePoweredOn,
			ExistingState:  power,
		}
	}
	if tools != string(types.VirtualMachineToolsRunningStatusGuestToolsRunning) {
		return new(types.GuestOperationsUnavailable)
	}
	creds, ok := auth.(*types.NamePasswordAuthentication)
	if !ok || creds.Username != g.user || creds.Password != g.password {
		return new(types.InvalidGuestLogin)
	}
	return nil
}

func fileFault(fault types.BaseMethodFault) *soap.Fault {
	return simulator.Fault("", fault)
}

func notFound(path string) types.BaseMethodFault {
	return &types.FileNotFound{FileFault: types.FileFault{File: path}}
}

func newToken() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// transferURL is the URL with host "*" (the client puts in the host it called), on this server's port.
func (g *processGuest) transferURL(ctx *simulator.Context, t *guestTransfer) string {
	_, port, err := net.SplitHostPort(ctx.Map.SessionManager().ServiceHostName)
	if err != nil {
		port = "443"
	}
	token := newToken()
	g.mu.Lock()
	now := time.Now()
	for k, old := range g.transfers {
		if now.After(old.expires) {
			delete(g.transfers, k)
		}
	}
	t.expires = now.Add(guestTransferTTL)
	g.transfers[token] = t
	g.mu.Unlock()
	return fmt.Sprintf("%s://%s:%s%s%s", g.scheme, *guestTransferHost, port, guestTransferPrefix, token)
}

func (m *processGuestFileManager) InitiateFileTransferToGuest(ctx *simulator.Context, req *types.InitiateFileTransferToGuest) soap.HasFault {
	body := new(methods.InitiateFileTransferToGuestBody)
	if f := m.g.check(ctx, req.Vm, req.Auth); f != nil {
		body.Fault_ = fileFault(f)
		return body
	}
	path := req.GuestFilePath
	if !filepath.IsAbs(path) {
		body.Fault_ = fileFault(&types.InvalidArgument{InvalidProperty: "guestFilePath"})
		return body
	}
	if st, err := os.Stat(filepath.Dir(path)); err != nil || !st.IsDir() {
		body.Fault_ = fileFault(notFound(filepath.Dir(path)))
		return body
	}
	if st, err := os.Stat(path); err == nil {
		if st.IsDir() || !req.Overwrite {
			body.Fault_ = fileFault(&types.FileAlreadyExists{FileFault: types.FileFault{File: path}})
			return body
		}
	}
	if req.FileSize < 0 {
		body.Fault_ = fileFault(&types.InvalidArgument{InvalidProperty: "fileSize"})
		return body
	}
	t := &guestTransfer{path: path, upload: true, size: req.FileSize, overwrite: req.Overwrite}
	if a, ok := req.FileAttributes.(*types.GuestPosixFileAttributes); ok {
		t.attrs = a
	}
	body.Res = &types.InitiateFileTransferToGuestResponse{Returnval: m.g.transferURL(ctx, t)}
	return body
}

func (m *processGuestFileManager) InitiateFileTransferFromGuest(ctx *simulator.Context, req *types.InitiateFileTransferFromGuest) soap.HasFault {
	body := new(methods.InitiateFileTransferFromGuestBody)
	if f := m.g.check(ctx, req.Vm, req.Auth); f != nil {
		body.Fault_ = fileFault(f)
		return body
	}
	path := req.GuestFilePath
	st, err := os.Stat(path)
	if !filepath.IsAbs(path) || err != nil || !st.Mode().IsRegular() {
		body.Fault_ = fileFault(notFound(path))
		return body
	}
	attrs := &types.GuestPosixFileAttributes{Permissions: int64(st.Mode().Perm())}
	mtime := st.ModTime()
	attrs.ModificationTime = &mtime
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		uid, gid := int32(sys.Uid), int32(sys.Gid)
		attrs.OwnerId, attrs.GroupId = &uid, &gid
	}
	url := m.g.transferURL(ctx, &guestTransfer{path: path})
	body.Res = &types.InitiateFileTransferFromGuestResponse{
		Returnval: types.FileTransferInformation{Attributes: attrs, Size: st.Size(), Url: url},
	}
	return body
}

// serveTransfer handles PUT (to the guest) and GET (from the guest) of a one-time transfer URL.
func (g *processGuest) serveTransfer(w http.ResponseWriter, r *http.Request) {
	token := strings.TrimPrefix(r.URL.Path, guestTransferPrefix)
	g.mu.Lock()
	t, ok := g.transfers[token]
	if ok {
		delete(g.transfers, token)
	}
	g.mu.Unlock()
	if !ok || time.Now().After(t.expires) {
		http.Error(w, "no such transfer", http.StatusNotFound)
		return
	}
	switch {
	case t.upload && r.Method == http.MethodPut:
		if err := t.write(r.Body); err != nil {
			log.Printf("guest file transfer to %s: %v", t.path, err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusOK)
	case !t.upload && r.Method == http.MethodGet:
		f, err := os.Open(t.path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		defer f.Close()
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = io.Copy(w, f)
	default:
		http.Error(w, "wrong method for this transfer", http.StatusMethodNotAllowed)
	}
}

// write puts exactly t.size bytes at t.path through a temporary file and a rename.
func (t *guestTransfer) write(body io.Reader) error {
	mode := os.FileMode(0o644)
	if t.attrs != nil && t.attrs.Permissions != 0 {
		mode = os.FileMode(t.attrs.Permissions) & os.ModePerm
	}
	tmp, err := os.CreateTemp(filepath.Dir(t.path), ".guest-transfer-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, io.LimitReader(body, t.size+1))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if n != t.size {
		return fmt.Errorf("got %d bytes, the transfer announced %d", n, t.size)
	}
	if err := os.Chmod(tmp.Name(), mode); err != nil {
		return err
	}
	if t.attrs != nil && (t.attrs.OwnerId != nil || t.attrs.GroupId != nil) {
		uid, gid := -1, -1
		if t.attrs.OwnerId != nil {
			uid = int(*t.attrs.OwnerId)
		}
		if t.attrs.GroupId != nil {
			gid = int(*t.attrs.GroupId)
		}
		if err := os.Chown(tmp.Name(), uid, gid); err != nil {
			return err
		}
	}
	if !t.overwrite {
		// Link fails when the path exists: no overwrite even if it appeared since the initiate call.
		if err := os.Link(tmp.Name(), t.path); err != nil {
			return err
		}
		return nil
	}
	return os.Rename(tmp.Name(), t.path)
}

func (m *processGuestProcessManager) StartProgramInGuest(ctx *simulator.Context, req *types.StartProgramInGuest) soap.HasFault {
	body := new(methods.StartProgramInGuestBody)
	if f := m.g.check(ctx, req.Vm, req.Auth); f != nil {
		body.Fault_ = fileFault(f)
		return body
	}
	spec := req.Spec.GetGuestProgramSpec()
	if !filepath.IsAbs(spec.ProgramPath) {
		body.Fault_ = fileFault(&types.InvalidArgument{InvalidProperty: "programPath"})
		return body
	}
	if st, err := os.Stat(spec.ProgramPath); err != nil || st.IsDir() {
		body.Fault_ = fileFault(notFound(spec.ProgramPath))
		return body
	}
	cmdLine := fmt.Sprintf("%q %s", spec.ProgramPath, spec.Arguments)
	cmd := exec.Command("/bin/sh", "-c", cmdLine)
	if spec.WorkingDirectory != "" {
		if st, err := os.Stat(spec.WorkingDirectory); err != nil || !st.IsDir() {
			body.Fault_ = fileFault(notFound(spec.WorkingDirectory))
			return body
		}
		cmd.Dir = spec.WorkingDirectory
	}
	cmd.Env = append(os.Environ(), spec.EnvVariables...)
	// Its own session: a signal to the launcher does not reach programs it started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		body.Fault_ = fileFault(&types.SystemError{Reason: err.Error()})
		return body
	}
	pid := int64(cmd.Process.Pid)
	p := &guestProcess{info: types.GuestProcessInfo{
		Name:      filepath.Base(spec.ProgramPath),
		Pid:       pid,
		Owner:     m.g.user,
		CmdLine:   cmdLine,
		StartTime: time.Now().UTC(),
	}}
	m.g.mu.Lock()
	m.g.processes[pid] = p
	m.g.mu.Unlock()
	go func() {
		err := cmd.Wait()
		code := int32(0)
		if err != nil {
			code = -1
			if ee, ok := err.(*exec.ExitError); ok {
				code = int32(ee.ExitCode())
			}
		}
		end := time.Now().UTC()
		m.g.mu.Lock()
		p.info.EndTime = &end
		p.info.ExitCode = code
		p.ended = true
		m.g.mu.Unlock()
	}()
	body.Res = &types.StartProgramInGuestResponse{Returnval: pid}
	return body
}

func (m *processGuestProcessManager) ListProcessesInGuest(ctx *simulator.Context, req *types.ListProcessesInGuest) soap.HasFault {
	body := new(methods.ListProcessesInGuestBody)
	if f := m.g.check(ctx, req.Vm, req.Auth); f != nil {
		body.Fault_ = fileFault(f)
		return body
	}
	m.g.mu.Lock()
	defer m.g.mu.Unlock()
	now := time.Now()
	for pid, p := range m.g.processes {
		if p.ended && now.Sub(*p.info.EndTime) > guestProcessKeep {
			delete(m.g.processes, pid)
		}
	}
	var list []types.GuestProcessInfo
	if len(req.Pids) == 0 {
		for _, p := range m.g.processes {
			list = append(list, p.info)
		}
	}
	for _, pid := range req.Pids {
		if p, ok := m.g.processes[pid]; ok {
			list = append(list, p.info)
		}
	}
	body.Res = &types.ListProcessesInGuestResponse{Returnval: list}
	return body
}

// reportHostThumbprint makes every host report sha1 (colon hex) as its certificate thumbprint, as a
// vCenter does for the ESXi hosts it manages. Only with -guest-transfer-host: otherwise vcsim's
// empty thumbprint stays.
func reportHostThumbprint(sha1 string) {
	if *guestTransferHost == "*" {
		return
	}
	if *guestHostThumbprint != "" {
		sha1 = *guestHostThumbprint
	}
	for _, e := range simulator.Map.All("HostSystem") {
		h := e.(*simulator.HostSystem)
		simulator.Map.WithLock(h, func() {
			h.Summary.Config.SslThumbprint = sha1
		})
	}
	log.Printf("guest operations: transfer URLs name %q; hosts report thumbprint %s", *guestTransferHost, sha1)
}
