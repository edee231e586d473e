// An ExtensionManager for the simulator. vcsim 0.24 names one in the service content but puts no
// object behind it, so every call to it fails; Ferry registers its vCenter plugin there. The request
// bodies are decoded by govmomi's own vim25 types, so a malformed registration fails here the way it
// would against a vCenter.
package main

import (
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// ExtensionManager keeps registered extensions in mo.ExtensionManager.ExtensionList, so the
// property collector serves `extensionList` from the same slice the methods change. The registry
// holds the object's lock around every method call and property read, so the methods take none.
type ExtensionManager struct {
	mo.ExtensionManager
}

func (m *ExtensionManager) index(key string) int {
	for i := range m.ExtensionList {
		if m.ExtensionList[i].Key == key {
			return i
		}
	}
	return -1
}

func extensionNotFound(key string) *soap.Fault {
	return simulator.Fault("extension "+key+" is not registered", &types.NotFound{})
}

func (m *ExtensionManager) RegisterExtension(req *types.RegisterExtension) soap.HasFault {
	body := &methods.RegisterExtensionBody{}
	ext := req.Extension
	if ext.Key == "" || m.index(ext.Key) >= 0 {
		body.Fault_ = simulator.Fault("extension key is empty or already registered",
			&types.InvalidArgument{InvalidProperty: "extension.key"})
		return body
	}
	m.ExtensionList = append(m.ExtensionList, ext)
	body.Res = &types.RegisterExtensionResponse{}
	return body
}

func (m *ExtensionManager) UpdateExtension(req *types.UpdateExtension) soap.HasFault {
	body := &methods.UpdateExtensionBody{}
	i := m.index(req.Extension.Key)
	if i < 0 {
		body.Fault_ = extensionNotFound(req.Extension.Key)
		return body
	}
	m.ExtensionList[i] = req.Extension
	body.Res = &types.UpdateExtensionResponse{}
	return body
}

func (m *ExtensionManager) UnregisterExtension(req *types.UnregisterExtension) soap.HasFault {
	body := &methods.UnregisterExtensionBody{}
	i := m.index(req.ExtensionKey)
	if i < 0 {
		body.Fault_ = extensionNotFound(req.ExtensionKey)
		return body
	}
	m.ExtensionList = append(m.ExtensionList[:i], m.ExtensionList[i+1:]...)
	body.Res = &types.UnregisterExtensionResponse{}
	return body
}

func (m *ExtensionManager) FindExtension(req *types.FindExtension) soap.HasFault {
	res := &types.FindExtensionResponse{}
	if i := m.index(req.ExtensionKey); i >= 0 {
		ext := m.ExtensionList[i]
		res.Returnval = &ext
	}
	return &methods.FindExtensionBody{Res: res}
}

// addExtensionManager puts the manager where the service content points (vCenter only: an ESXi
// has none).
func addExtensionManager(content types.ServiceContent) {
	if content.ExtensionManager == nil {
		return
	}
	m := &ExtensionManager{}
	m.Self = *content.ExtensionManager
	simulator.Map.Put(m)
}
