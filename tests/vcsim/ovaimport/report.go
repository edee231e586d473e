package main

import (
	"context"
	"reflect"
	"strings"

	"github.com/vmware/govmomi/ovf"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// importReport is what the vCenter holds after the import (read back with the property collector),
// plus how the import went and what the descriptor asked for, kept apart under "descriptor".
type importReport struct {
	Name     string        `json:"name"`
	Moref    string        `json:"moref"`
	GuestID  string        `json:"guest_id"`
	NumCPU   int32         `json:"num_cpu"`
	MemoryMB int32         `json:"memory_mb"`
	Devices  []deviceEntry `json:"devices"`
	// config.vAppConfig; null when the vCenter keeps none for the VM.
	VApp *vappEntry `json:"vapp"`
	// config.extraConfig: vcsim 0.24.2 puts the import's PropertyMapping here instead of vAppConfig.
	ExtraConfig map[string]string `json:"extra_config"`
	Server      string            `json:"server"`

	ImportSeconds           float64          `json:"import_seconds"`
	Uploaded                []uploadResult   `json:"uploaded"`
	ImportSpecHasVAppConfig bool             `json:"import_spec_has_vapp_config"`
	Descriptor              descriptorReport `json:"descriptor"`
}

type deviceEntry struct {
	Type          string `json:"type"`
	Key           int32  `json:"key"`
	Label         string `json:"label,omitempty"`
	ControllerKey int32  `json:"controller_key,omitempty"`
	CapacityBytes int64  `json:"capacity_bytes,omitempty"`
	File          string `json:"file,omitempty"`
	Network       string `json:"network,omitempty"`
}

type vappEntry struct {
	Properties []vappProperty `json:"properties"`
	Transports []string       `json:"transports"`
	Products   []string       `json:"products"`
}

type vappProperty struct {
	Key      int32  `json:"key"`
	ID       string `json:"id"`
	Value    string `json:"value"`
	Default  string `json:"default"`
	Type     string `json:"type"`
	Password bool   `json:"password"`
}

// descriptorReport is the client's reading of the OVF (govmomi's ovf.Unmarshal), not the vCenter's.
type descriptorReport struct {
	Properties []descriptorProperty `json:"properties"`
	Transports []string             `json:"transports"`
}

type descriptorProperty struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Password bool   `json:"password"`
}

func report(ctx context.Context, c *vim25.Client, ref types.ManagedObjectReference) (*importReport, error) {
	var vm mo.VirtualMachine
	pc := property.DefaultCollector(c)
	if err := pc.RetrieveOne(ctx, ref, []string{"name", "config"}, &vm); err != nil {
		return nil, err
	}
	r := &importReport{Name: vm.Name, Moref: ref.Value, ExtraConfig: map[string]string{}, Server: c.ServiceContent.About.FullName}
	if vm.Config == nil {
		return r, nil
	}
	cfg := vm.Config
	r.GuestID = cfg.GuestId
	r.NumCPU = cfg.Hardware.NumCPU
	r.MemoryMB = cfg.Hardware.MemoryMB
	for _, d := range cfg.Hardware.Device {
		r.Devices = append(r.Devices, describeDevice(d))
	}
	for _, o := range cfg.ExtraConfig {
		if ov := o.GetOptionValue(); ov != nil {
			if s, ok := ov.Value.(string); ok {
				r.ExtraConfig[ov.Key] = s
			}
		}
	}
	if cfg.VAppConfig != nil {
		if info := cfg.VAppConfig.GetVmConfigInfo(); info != nil {
			v := &vappEntry{Properties: []vappProperty{}, Transports: info.OvfEnvironmentTransport}
			for _, p := range info.Property {
				v.Properties = append(v.Properties, vappProperty{
					Key: p.Key, ID: p.Id, Value: p.Value, Default: p.DefaultValue, Type: p.Type,
					// vCenter turns ovf:password="true" into the property type "password".
					Password: strings.HasPrefix(p.Type, "password"),
				})
			}
			for _, p := range info.Product {
				v.Products = append(v.Products, p.Name)
			}
			r.VApp = v
		}
	}
	return r, nil
}

func describeDevice(d types.BaseVirtualDevice) deviceEntry {
	t := reflect.TypeOf(d)
	if t.Kind() == reflect.Ptr {
		t = t.Elem()
	}
	vd := d.GetVirtualDevice()
	e := deviceEntry{Type: t.Name(), Key: vd.Key, ControllerKey: vd.ControllerKey}
	if info, ok := vd.DeviceInfo.(*types.Description); ok && info != nil {
		e.Label = info.Label
	}
	switch dev := d.(type) {
	case *types.VirtualDisk:
		e.CapacityBytes = dev.CapacityInBytes
		if e.CapacityBytes == 0 {
			e.CapacityBytes = dev.CapacityInKB * 1024
		}
	}
	if fb, ok := vd.Backing.(types.BaseVirtualDeviceFileBackingInfo); ok {
		e.File = fb.GetVirtualDeviceFileBackingInfo().FileName
	}
	if nb, ok := vd.Backing.(*types.VirtualEthernetCardNetworkBackingInfo); ok {
		e.Network = nb.DeviceName
	}
	return e
}

func describeDescriptor(env *ovf.Envelope) descriptorReport {
	r := descriptorReport{Properties: []descriptorProperty{}}
	for _, ps := range env.VirtualSystem.Product {
		for _, p := range ps.Property {
			r.Properties = append(r.Properties, descriptorProperty{
				ID: p.Key, Type: p.Type, Password: p.Password != nil && *p.Password,
			})
		}
	}
	for _, hw := range env.VirtualSystem.VirtualHardware {
		if hw.Transport != nil {
			r.Transports = append(r.Transports, strings.Fields(*hw.Transport)...)
		}
	}
	return r
}
