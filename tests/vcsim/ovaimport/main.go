// ovaimport deploys an OVA into a vCenter the way `govc import.ova` does (govc is not in Debian's
// govmomi package): read the .ovf from the tar, OvfManager.CreateImportSpec with the property and
// network mappings, ResourcePool.ImportVApp, upload each file through the NFC lease (matched by
// ImportKey == FileItem.DeviceId), complete the lease. It then prints one JSON object with what
// the vCenter holds for the new VM (report.go), so a test can check what landed.
//
//	ovaimport -url https://127.0.0.1:PORT/sdk -cacert CERT -ova X.ova -name VM \
//	          -prop ferry.hostname=h -prop ferry.ip=192.0.2.10/24 -network "VM Network"
//	ovaimport -url ... -cacert CERT -find VM      # {"name":"VM","found":bool}; no import
//
// Any failure exits 1 with "ovaimport: ..." on stderr and nothing on stdout. Its own folder keeps
// it out of the launcher's build (scripts/vcsim.sh compiles tests/vcsim/*.go); scripts/ovaimport.sh
// builds it the same offline GOPATH way.
package main

import (
	"archive/tar"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash"
	"io"
	"io/ioutil"
	"net/url"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/nfc"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/ovf"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// A descriptor is a few kB to a few MB; a bound keeps a bogus tar member from filling memory.
const maxDescriptorBytes = 16 << 20

type propFlags []string

func (p *propFlags) String() string     { return strings.Join(*p, ",") }
func (p *propFlags) Set(v string) error { *p = append(*p, v); return nil }

type options struct {
	url, cacert, thumbprint, user, password string
	insecure                                bool
	ova, name, network, find                string
	props                                   propFlags
	timeout                                 time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.url, "url", "", "vCenter SDK URL, e.g. https://127.0.0.1:PORT/sdk")
	flag.StringVar(&o.cacert, "cacert", "", "PEM file of the CA (or self-signed certificate) to trust")
	flag.StringVar(&o.thumbprint, "thumbprint", "", "SHA-1 thumbprint (colon hex) of the server certificate to trust")
	flag.BoolVar(&o.insecure, "insecure", false, "do not verify the server certificate")
	flag.StringVar(&o.user, "user", "user", "user name (vcsim without a login accepts any non-empty one)")
	flag.StringVar(&o.password, "password", os.Getenv("VSPHERE_PASSWORD"), "password (default: $VSPHERE_PASSWORD)")
	flag.StringVar(&o.ova, "ova", "", "the OVA to import")
	flag.StringVar(&o.name, "name", "", "name of the new VM (default: the OVF's VirtualSystem name)")
	flag.StringVar(&o.network, "network", "VM Network", "inventory network every OVF network is mapped to")
	flag.StringVar(&o.find, "find", "", "only report whether a VM of this name exists")
	flag.Var(&o.props, "prop", "key=value of an OVF ProductSection property (repeatable)")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up after this long")
	flag.Parse()
	if flag.NArg() > 0 {
		fail(fmt.Errorf("unexpected arguments %q", flag.Args()))
	}
	out, err := run(o)
	if err != nil {
		fail(err)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "ovaimport: %v\n", err)
	os.Exit(1)
}

func run(o options) (interface{}, error) {
	if o.url == "" {
		return nil, errors.New("-url is required")
	}
	if o.find == "" && o.ova == "" {
		return nil, errors.New("-ova (or -find) is required")
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()

	// The OVA is read before any vCenter call, so a broken one leaves the inventory untouched.
	var pkg *ovaPackage
	var props []types.KeyValue
	if o.find == "" {
		var err error
		if pkg, err = openOVA(o.ova); err != nil {
			return nil, err
		}
		if props, err = propertyMapping(pkg.env, o.props); err != nil {
			return nil, err
		}
	}

	c, err := connect(ctx, o)
	if err != nil {
		return nil, err
	}
	defer func() { _ = c.Logout(context.Background()) }()
	finder := find.NewFinder(c.Client, false)
	dc, err := finder.DefaultDatacenter(ctx)
	if err != nil {
		return nil, fmt.Errorf("default datacenter: %w", err)
	}
	finder.SetDatacenter(dc)

	if o.find != "" {
		vm, err := findVM(ctx, finder, o.find)
		if err != nil {
			return nil, err
		}
		return map[string]interface{}{"name": o.find, "found": vm != nil}, nil
	}

	name := o.name
	if name == "" {
		name = pkg.env.VirtualSystem.ID
		if n := pkg.env.VirtualSystem.Name; n != nil && *n != "" {
			name = *n
		}
	}
	if existing, err := findVM(ctx, finder, name); err != nil {
		return nil, err
	} else if existing != nil {
		return nil, fmt.Errorf("a VM named %q exists already", name)
	}

	started := time.Now()
	ref, spec, uploaded, err := importOVA(ctx, c.Client, finder, pkg, name, props, o.network)
	if err != nil {
		return nil, err
	}
	elapsed := time.Since(started)
	rep, err := report(ctx, c.Client, ref)
	if err != nil {
		return nil, fmt.Errorf("read back the imported VM: %w", err)
	}
	rep.ImportSeconds = elapsed.Seconds()
	rep.Uploaded = uploaded
	rep.ImportSpecHasVAppConfig = spec.ConfigSpec.VAppConfig != nil
	rep.Descriptor = describeDescriptor(pkg.env)
	return rep, nil
}

func connect(ctx context.Context, o options) (*govmomi.Client, error) {
	u, err := soap.ParseURL(o.url)
	if err != nil || u == nil {
		return nil, fmt.Errorf("-url %q: not a URL", o.url)
	}
	user, pass := o.user, o.password
	// soap.ParseURL puts an empty user into every URL; only a named one overrides the flags.
	if u.User != nil && u.User.Username() != "" {
		user = u.User.Username()
		if p, ok := u.User.Password(); ok {
			pass = p
		}
	}
	u.User = nil
	if user == "" || pass == "" {
		return nil, errors.New("need a user name and a password (-user, -password or $VSPHERE_PASSWORD)")
	}
	sc := soap.NewClient(u, o.insecure)
	if o.cacert != "" {
		if err := sc.SetRootCAs(o.cacert); err != nil {
			return nil, fmt.Errorf("-cacert %s: %w", o.cacert, err)
		}
	}
	if o.thumbprint != "" {
		sc.SetThumbprint(u.Host, o.thumbprint)
	}
	vc, err := vim25.NewClient(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", u.Host, err)
	}
	c := &govmomi.Client{Client: vc, SessionManager: session.NewManager(vc)}
	if err := c.Login(ctx, url.UserPassword(user, pass)); err != nil {
		return nil, fmt.Errorf("log in to %s as %s: %w", u.Host, user, err)
	}
	return c, nil
}

func findVM(ctx context.Context, finder *find.Finder, name string) (*object.VirtualMachine, error) {
	vm, err := finder.VirtualMachine(ctx, name)
	var nf *find.NotFoundError
	if errors.As(err, &nf) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up VM %q: %w", name, err)
	}
	return vm, nil
}

// ovaPackage is the parsed descriptor plus what is needed to stream members from the tar again.
type ovaPackage struct {
	path       string
	descriptor []byte
	env        *ovf.Envelope
	members    map[string]int64  // tar member name -> size
	digests    map[string]string // manifest: member -> "SHA256:hex" / "SHA1:hex"
}

func openOVA(file string) (*ovaPackage, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("open OVA: %w", err)
	}
	defer f.Close()
	pkg := &ovaPackage{path: file, members: map[string]int64{}, digests: map[string]string{}}
	var ovfName, mfName string
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: not a readable tar (OVA): %w", file, err)
		}
		if h.Typeflag != tar.TypeReg && h.Typeflag != tar.TypeRegA {
			continue
		}
		pkg.members[h.Name] = h.Size
		switch strings.ToLower(path.Ext(h.Name)) {
		case ".ovf":
			// The OVF spec puts the descriptor first; like govc, the first one is the one.
			if ovfName != "" {
				continue
			}
			if h.Size > maxDescriptorBytes {
				return nil, fmt.Errorf("%s: descriptor of %d bytes is over the %d byte limit", h.Name, h.Size, maxDescriptorBytes)
			}
			ovfName = h.Name
			if pkg.descriptor, err = ioutil.ReadAll(tr); err != nil {
				return nil, fmt.Errorf("read %s from %s: %w", h.Name, file, err)
			}
		case ".mf":
			mfName = h.Name
			b, err := ioutil.ReadAll(io.LimitReader(tr, maxDescriptorBytes))
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", h.Name, err)
			}
			if pkg.digests, err = parseManifest(b); err != nil {
				return nil, fmt.Errorf("%s: %w", h.Name, err)
			}
		}
	}
	if ovfName == "" {
		return nil, fmt.Errorf("%s: no .ovf descriptor in the archive", file)
	}
	env, err := ovf.Unmarshal(strings.NewReader(string(pkg.descriptor)))
	if err != nil {
		return nil, fmt.Errorf("%s: not a valid OVF descriptor: %w", ovfName, err)
	}
	if env.VirtualSystem == nil || len(env.VirtualSystem.VirtualHardware) == 0 {
		return nil, fmt.Errorf("%s: no VirtualSystem with a VirtualHardwareSection", ovfName)
	}
	pkg.env = env
	if mfName != "" {
		if err := checkDigest(pkg, ovfName, pkg.descriptor); err != nil {
			return nil, err
		}
	}
	if env.References != nil {
		for _, r := range env.References {
			if _, ok := pkg.members[r.Href]; !ok {
				return nil, fmt.Errorf("%s references %s, which the OVA does not hold", ovfName, r.Href)
			}
		}
	}
	return pkg, nil
}

// parseManifest reads "SHA256(name)= hex" lines (SHA1 too, as older OVAs use).
func parseManifest(b []byte) (map[string]string, error) {
	out := map[string]string{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		open, close := strings.Index(line, "("), strings.LastIndex(line, ")= ")
		if open <= 0 || close < open {
			return nil, fmt.Errorf("line %d is not ALGO(file)= digest: %q", i+1, line)
		}
		algo := strings.ToUpper(line[:open])
		if algo != "SHA256" && algo != "SHA1" {
			return nil, fmt.Errorf("line %d: digest %s is not SHA256 or SHA1", i+1, algo)
		}
		out[line[open+1:close]] = algo + ":" + strings.ToLower(strings.TrimSpace(line[close+3:]))
	}
	return out, nil
}

func newDigest(pkg *ovaPackage, member string) (hash.Hash, string) {
	want, ok := pkg.digests[member]
	if !ok {
		return nil, ""
	}
	if strings.HasPrefix(want, "SHA1:") {
		return sha1.New(), want
	}
	return sha256.New(), want
}

func checkDigest(pkg *ovaPackage, member string, data []byte) error {
	h, want := newDigest(pkg, member)
	if h == nil {
		return fmt.Errorf("the manifest has no digest of %s", member)
	}
	h.Write(data)
	return compareDigest(member, h, want)
}

func compareDigest(member string, h hash.Hash, want string) error {
	got := want[:strings.Index(want, ":")+1] + hex.EncodeToString(h.Sum(nil))
	if got != want {
		return fmt.Errorf("%s: digest %s does not match the manifest's %s", member, got, want)
	}
	return nil
}

// propertyMapping turns -prop key=value into the import's PropertyMapping; a key the OVF does not
// declare is refused (vCenter would ignore it, and a typo would go unnoticed).
func propertyMapping(env *ovf.Envelope, flags []string) ([]types.KeyValue, error) {
	known := map[string]bool{}
	for _, ps := range env.VirtualSystem.Product {
		for _, p := range ps.Property {
			known[p.Key] = true
		}
	}
	var out []types.KeyValue
	seen := map[string]bool{}
	for _, f := range flags {
		k, v, ok := strings.Cut(f, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("-prop %q: want key=value", f)
		}
		if !known[k] {
			return nil, fmt.Errorf("-prop %s: the OVF declares no such property (it has %s)", k, strings.Join(sortedKeys(known), ", "))
		}
		if seen[k] {
			return nil, fmt.Errorf("-prop %s given twice", k)
		}
		seen[k] = true
		out = append(out, types.KeyValue{Key: k, Value: v})
	}
	return out, nil
}

func sortedKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// importOVA is govc's importer: import spec, ImportVApp, NFC uploads, lease complete.
func importOVA(ctx context.Context, c *vim25.Client, finder *find.Finder, pkg *ovaPackage, name string,
	props []types.KeyValue, network string) (types.ManagedObjectReference, *types.VirtualMachineImportSpec, []uploadResult, error) {
	var none types.ManagedObjectReference
	pool, ds, err := placement(ctx, finder)
	if err != nil {
		return none, nil, nil, err
	}
	net, err := finder.Network(ctx, network)
	if err != nil {
		return none, nil, nil, fmt.Errorf("network %q: %w", network, err)
	}
	var nmap []types.OvfNetworkMapping
	if pkg.env.Network != nil {
		for _, n := range pkg.env.Network.Networks {
			nmap = append(nmap, types.OvfNetworkMapping{Name: n.Name, Network: net.Reference()})
		}
	}
	cisp := types.OvfCreateImportSpecParams{
		EntityName:             name,
		OvfManagerCommonParams: types.OvfManagerCommonParams{Locale: "US"},
		PropertyMapping:        props,
		NetworkMapping:         nmap,
	}
	res, err := ovf.NewManager(c).CreateImportSpec(ctx, string(pkg.descriptor), pool, ds, cisp)
	if err != nil {
		return none, nil, nil, fmt.Errorf("CreateImportSpec: %w", err)
	}
	for _, w := range res.Warning {
		fmt.Fprintf(os.Stderr, "ovaimport: import spec warning: %s\n", w.LocalizedMessage)
	}
	if len(res.Error) > 0 {
		var msgs []string
		for _, e := range res.Error {
			msgs = append(msgs, e.LocalizedMessage)
		}
		return none, nil, nil, fmt.Errorf("CreateImportSpec refused the OVF: %s", strings.Join(msgs, "; "))
	}
	spec, ok := res.ImportSpec.(*types.VirtualMachineImportSpec)
	if !ok {
		return none, nil, nil, fmt.Errorf("CreateImportSpec returned a %T, not a VirtualMachineImportSpec", res.ImportSpec)
	}

	lease, err := pool.ImportVApp(ctx, spec, nil, nil)
	if err != nil {
		return none, nil, nil, fmt.Errorf("ImportVApp: %w", err)
	}
	info, err := lease.Wait(ctx, res.FileItem)
	if err != nil {
		return none, nil, nil, fmt.Errorf("NFC lease: %w", err)
	}
	if len(info.Items) != len(res.FileItem) {
		abort(ctx, c, lease, info.Entity, fmt.Errorf("lease has %d device URLs for the %d files to upload", len(info.Items), len(res.FileItem)))
		return none, nil, nil, fmt.Errorf("NFC lease offers %d upload URLs for the %d files of the import spec", len(info.Items), len(res.FileItem))
	}
	updater := lease.StartUpdater(ctx, info)
	var uploaded []uploadResult
	for _, item := range info.Items {
		u, err := upload(ctx, lease, pkg, item)
		if err != nil {
			updater.Done()
			abort(ctx, c, lease, info.Entity, err)
			return none, nil, nil, err
		}
		uploaded = append(uploaded, u)
	}
	updater.Done()
	if err := lease.Complete(ctx); err != nil {
		return none, nil, nil, fmt.Errorf("complete the NFC lease: %w", err)
	}
	return info.Entity, spec, uploaded, nil
}

// placement: the default datacenter's first cluster (else first host) root pool, first datastore.
func placement(ctx context.Context, finder *find.Finder) (*object.ResourcePool, *object.Datastore, error) {
	var pool *object.ResourcePool
	var err error
	if clusters, cerr := finder.ClusterComputeResourceList(ctx, "*"); cerr == nil && len(clusters) > 0 {
		pool, err = clusters[0].ResourcePool(ctx)
	} else if hosts, herr := finder.HostSystemList(ctx, "*/*"); herr == nil && len(hosts) > 0 {
		pool, err = hosts[0].ResourcePool(ctx)
	} else {
		return nil, nil, errors.New("the default datacenter has no cluster and no host")
	}
	if err != nil {
		return nil, nil, fmt.Errorf("resource pool: %w", err)
	}
	stores, err := finder.DatastoreList(ctx, "*")
	if err != nil || len(stores) == 0 {
		return nil, nil, fmt.Errorf("the default datacenter has no datastore: %v", err)
	}
	return pool, stores[0], nil
}

type uploadResult struct {
	File     string `json:"file"`
	DeviceID string `json:"device_id"`
	Bytes    int64  `json:"bytes"`
	Verified bool   `json:"manifest_verified"`
}

// upload streams one member of the tar to its lease URL, hashing it on the way against the manifest.
func upload(ctx context.Context, lease *nfc.Lease, pkg *ovaPackage, item nfc.FileItem) (uploadResult, error) {
	r := uploadResult{File: item.Path, DeviceID: item.DeviceId}
	f, err := os.Open(pkg.path)
	if err != nil {
		return r, fmt.Errorf("open OVA: %w", err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return r, fmt.Errorf("%s: the OVA has no member %s", pkg.path, item.Path)
		}
		if err != nil {
			return r, fmt.Errorf("read OVA: %w", err)
		}
		if h.Name != item.Path {
			continue
		}
		digest, want := newDigest(pkg, item.Path)
		var src io.Reader = tr
		if digest != nil {
			src = io.TeeReader(tr, digest)
		}
		counter := &countingReader{r: src}
		opts := soap.Upload{ContentLength: h.Size}
		if err := lease.Upload(ctx, item, counter, opts); err != nil {
			return r, fmt.Errorf("upload %s to %s: %w", item.Path, item.URL, err)
		}
		r.Bytes = counter.n
		if r.Bytes != h.Size {
			return r, fmt.Errorf("upload %s: sent %d of %d bytes", item.Path, r.Bytes, h.Size)
		}
		if digest != nil {
			if err := compareDigest(item.Path, digest, want); err != nil {
				return r, err
			}
			r.Verified = true
		}
		return r, nil
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// abort gives the lease up; a real vCenter then removes the half-imported VM, vcsim 0.24.2 does
// not, so a VM still there afterwards is destroyed here: a failed import leaves no VM behind.
func abort(ctx context.Context, c *vim25.Client, lease *nfc.Lease, vmRef types.ManagedObjectReference, cause error) {
	fault := &types.LocalizedMethodFault{Fault: &types.SystemError{Reason: cause.Error()}, LocalizedMessage: cause.Error()}
	if err := lease.Abort(ctx, fault); err != nil {
		fmt.Fprintf(os.Stderr, "ovaimport: abort the NFC lease: %v\n", err)
	}
	vm := object.NewVirtualMachine(c, vmRef)
	if _, err := vm.ObjectName(ctx); err != nil {
		return // gone already
	}
	task, err := vm.Destroy(ctx)
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "ovaimport: remove the half-imported VM %s: %v\n", vmRef.Value, err)
	}
}
