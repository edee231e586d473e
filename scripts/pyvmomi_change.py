#!/usr/bin/env python3
"""Changes a vCenter's inventory with pyvmomi (VMware's Python SDK), the way another admin would, so
a test can watch Ferry's discovery pick the change up.

usage: pyvmomi_change.py --host H --port P [--user U] --cafile PEM ACTION ...
  rename    --vm NAME --to NEW          Rename_Task
  power-off --vm NAME                   PowerOffVM_Task
  create    --name NEW --like NAME [--disk-mb N]
                                        CreateVM_Task: a new VM with one thin disk of N MiB (default
                                        64) in the folder, resource pool, host and datastore of NAME

The password comes from the environment (VSPHERE_PASSWORD), never from the command line.

Tasks are waited for by reading task.info.state every 50 ms, not with pyVim's WaitForTask: that
calls WaitForUpdates on the server's PropertyCollector, and vcsim has a single one shared by all
sessions, so WaitForTask would take the updates meant for the discovery being tested.

Prints one JSON object on stdout: {"action", "moref", "name", "done_at"} where done_at is the
Unix time (float seconds) at which the task was seen finished, so the caller can time how long
the change took to reach it. For create also "bios_uuid", "instance_uuid", "power_state",
"guest_ips" and "disks": [{"capacity_bytes", "file"}] as the server reports them after the task
(the fields and shapes of pyvmomi_inventory.py).

Exit status: 0 on success, 2 on bad arguments, 3 for a VM name that is not there, 4 for a rejected
login (InvalidLogin), 1 for anything else (a failed task among them); the reason goes to stderr.
"""
import argparse
import json
import os
import ssl
import sys
import time

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

# A task that runs longer than this on a simulator is stuck.
TASK_TIMEOUT_SECONDS = 120


class NoSuchVm(Exception):
    pass


def parse_args(argv):
    p = argparse.ArgumentParser(description="Change a vCenter's VMs with pyvmomi.")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", default="user")
    p.add_argument("--cafile", required=True, help="PEM file the server certificate must chain to")
    sub = p.add_subparsers(dest="action", required=True)
    r = sub.add_parser("rename")
    r.add_argument("--vm", required=True)
    r.add_argument("--to", required=True)
    o = sub.add_parser("power-off")
    o.add_argument("--vm", required=True)
    c = sub.add_parser("create")
    c.add_argument("--name", required=True)
    c.add_argument("--like", required=True, help="an existing VM whose placement the new one takes")
    c.add_argument("--disk-mb", type=int, default=64)
    a = p.parse_args(argv)
    if not 1 <= a.port <= 65535:
        p.error("--port must be 1..65535")
    for field in ("to", "name"):
        value = getattr(a, field, None)
        if value is not None and not value.strip():
            p.error(f"--{field} must not be empty")
    if getattr(a, "disk_mb", 1) < 1:
        p.error("--disk-mb must be at least 1")
    return a


def wait_task(task):
    """Polls task.info.state until the task ends; raises with the server's fault on error."""
    deadline = time.monotonic() + TASK_TIMEOUT_SECONDS
    while True:
        info = task.info
        if info.state == vim.TaskInfo.State.success:
            return info.result
        if info.state == vim.TaskInfo.State.error:
            fault = info.error
            raise RuntimeError(f"task {info.descriptionId} failed: {getattr(fault, 'msg', fault)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"task {info.descriptionId} still {info.state} after "
                               f"{TASK_TIMEOUT_SECONDS} s")
        time.sleep(0.05)


def find_vm(content, name):
    """The VM of that name, found with one property retrieval (not one call per VM)."""
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        pc = vmodl.query.PropertyCollector
        spec = pc.FilterSpec(
            objectSet=[pc.ObjectSpec(obj=view, skip=True, selectSet=[
                pc.TraversalSpec(name="view", path="view", skip=False, type=vim.view.ContainerView)
            ])],
            propSet=[pc.PropertySpec(type=vim.VirtualMachine, all=False, pathSet=["name"])],
        )
        found = []
        result = content.propertyCollector.RetrievePropertiesEx([spec], pc.RetrieveOptions())
        while result is not None:
            for oc in result.objects or []:
                if any(p.val == name for p in oc.propSet or []):
                    found.append(oc.obj)
            if not result.token:
                break
            result = content.propertyCollector.ContinueRetrievePropertiesEx(result.token)
    finally:
        view.Destroy()
    if len(found) != 1:
        raise NoSuchVm(f"{len(found)} VMs are named {name!r}; expected exactly one")
    return found[0]


def disk_spec(datastore_name, size_mb):
    """A SCSI controller and one new thin disk on it, created in the VM's folder."""
    controller = vim.vm.device.VirtualDeviceSpec(
        operation=vim.vm.device.VirtualDeviceSpec.Operation.add,
        device=vim.vm.device.ParaVirtualSCSIController(
            key=-101, busNumber=0,
            sharedBus=vim.vm.device.VirtualSCSIController.Sharing.noSharing),
    )
    disk = vim.vm.device.VirtualDeviceSpec(
        operation=vim.vm.device.VirtualDeviceSpec.Operation.add,
        fileOperation=vim.vm.device.VirtualDeviceSpec.FileOperation.create,
        device=vim.vm.device.VirtualDisk(
            key=-102, controllerKey=-101, unitNumber=0,
            capacityInKB=size_mb * 1024,
            backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                diskMode="persistent", thinProvisioned=True, fileName=f"[{datastore_name}]"),
        ),
    )
    return [controller, disk]


def disks_of(vm):
    out = []
    for dev in vm.config.hardware.device or []:
        if isinstance(dev, vim.vm.device.VirtualDisk):
            size = getattr(dev, "capacityInBytes", None) or (dev.capacityInKB or 0) * 1024
            out.append({"capacity_bytes": size, "file": getattr(dev.backing, "fileName", None)})
    return out


def guest_ips(vm):
    """As pyvmomi_inventory.py lists them: guest.ipAddress first, then every NIC's, no repeats."""
    ips = []
    guest = vm.guest
    if guest is None:
        return ips
    if guest.ipAddress:
        ips.append(guest.ipAddress)
    for nic in guest.net or []:
        for ip in nic.ipAddress or []:
            if ip and ip not in ips:
                ips.append(ip)
    return ips


def create(content, args):
    like = find_vm(content, args.like)
    datastore = like.datastore[0].name
    config = vim.vm.ConfigSpec(
        name=args.name, guestId="otherLinux64Guest", numCPUs=1, memoryMB=128,
        files=vim.vm.FileInfo(vmPathName=f"[{datastore}]"),
        deviceChange=disk_spec(datastore, args.disk_mb),
    )
    task = like.parent.CreateVM_Task(config=config, pool=like.resourcePool,
                                     host=like.runtime.host)
    vm = wait_task(task)
    done_at = time.time()
    return {
        "action": "create", "moref": vm._moId, "name": vm.name, "done_at": done_at,
        "bios_uuid": vm.config.uuid, "instance_uuid": vm.config.instanceUuid,
        "power_state": str(vm.runtime.powerState), "guest_ips": guest_ips(vm),
        "disks": disks_of(vm),
    }


def main(argv):
    args = parse_args(argv)
    password = os.environ.get("VSPHERE_PASSWORD")
    if password is None:
        print("pyvmomi_change: set VSPHERE_PASSWORD", file=sys.stderr)
        return 2
    ctx = ssl.create_default_context(cafile=args.cafile)
    try:
        si = SmartConnect(host=args.host, port=args.port, user=args.user, pwd=password,
                          sslContext=ctx)
    except vim.fault.InvalidLogin as e:
        print(f"pyvmomi_change: InvalidLogin: {e.msg}", file=sys.stderr)
        return 4
    try:
        content = si.RetrieveContent()
        if args.action == "rename":
            vm = find_vm(content, args.vm)
            wait_task(vm.Rename_Task(newName=args.to))
            out = {"action": "rename", "moref": vm._moId, "name": args.to, "done_at": time.time()}
        elif args.action == "power-off":
            vm = find_vm(content, args.vm)
            wait_task(vm.PowerOffVM_Task())
            out = {"action": "power-off", "moref": vm._moId, "name": args.vm,
                   "done_at": time.time()}
        else:
            out = create(content, args)
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
        return 0
    finally:
        Disconnect(si)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except NoSuchVm as e:
        print(f"pyvmomi_change: {e}", file=sys.stderr)
        sys.exit(3)
    except Exception as e:  # noqa: BLE001 - one readable line instead of a traceback
        print(f"pyvmomi_change: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
