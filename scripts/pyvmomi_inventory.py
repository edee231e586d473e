#!/usr/bin/env python3
"""The VMs of a vCenter as pyvmomi (VMware's Python SDK) sees them: the reference that Ferry's own
vSphere client and discovery are compared against.

usage: pyvmomi_inventory.py --host H --port P [--user U] (--cafile PEM | --thumbprint HEX | --insecure)
                            [--time] [--repeat N]

The password comes from the environment (VSPHERE_PASSWORD), never from the command line, where
other users of the machine could read it.

Prints one JSON object on stdout:
  {"about": {"fullName", "apiVersion", "instanceUuid"}, "count": N,
   "vms": [{"moref", "name", "bios_uuid", "instance_uuid", "power_state", "guest_ips",
            "disks": [{"capacity_bytes", "file"}]}, ...]}            (sorted by name, then moref)
With --time it also holds "retrieval_seconds" (a list with --repeat N: one per round) and prints
"pyvmomi retrieval: N VMs in S s" to stderr. A retrieval is what discovery does in one go:
create a ContainerView of every VirtualMachine below the root folder, retrieve the properties
below with one PropertyCollector RetrievePropertiesEx over it (following the continuation token
through every page), destroy the view, and turn the result into the records above. Login and
printing the JSON are not part of it.

Exit status: 0 on success, 2 on bad arguments, 3 for a rejected login (InvalidLogin), 4 for a
certificate that does not match --thumbprint, 1 for anything else; the reason goes to stderr.
"""
import argparse
import hashlib
import json
import os
import socket
import ssl
import sys
import time

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

PROPS = [
    "name",
    "config.uuid",
    "config.instanceUuid",
    "runtime.powerState",
    "guest.ipAddress",
    "guest.net",
    "config.hardware.device",
]


def parse_args(argv):
    p = argparse.ArgumentParser(description="List a vCenter's VMs with pyvmomi as JSON.")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", default="user")
    trust = p.add_mutually_exclusive_group(required=True)
    trust.add_argument("--cafile", help="PEM file the server certificate must chain to")
    trust.add_argument("--thumbprint", help="the server certificate's SHA-1/SHA-256 thumbprint")
    trust.add_argument("--insecure", action="store_true", help="do not check the certificate")
    p.add_argument("--time", action="store_true", help="report how long the retrieval took")
    p.add_argument("--repeat", type=int, default=1, help="retrieve this many times (timing)")
    a = p.parse_args(argv)
    if not 1 <= a.port <= 65535:
        p.error("--port must be 1..65535")
    if not 1 <= a.repeat <= 100:
        p.error("--repeat must be 1..100")
    return a


def ssl_context(args):
    if args.cafile:
        return ssl.create_default_context(cafile=args.cafile)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class ThumbprintMismatch(Exception):
    pass


def check_thumbprint(host, port, want):
    """Compares the server certificate's SHA-1 or SHA-256 digest with the pin.

    Done here rather than through SmartConnect's own thumbprint argument: pyvmomi (9.x) checks
    that pin only after a failed chain verification, so with a context that does not verify
    (the only way to reach a self-signed server) any thumbprint at all is accepted.
    """
    digits = want.replace(":", "").lower()
    algo = {40: hashlib.sha1, 64: hashlib.sha256}.get(len(digits))
    if algo is None or any(c not in "0123456789abcdef" for c in digits):
        raise ValueError("--thumbprint: 40 (SHA-1) or 64 (SHA-256) hex digits, colons allowed")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=30) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    got = algo(der).hexdigest()
    if got != digits:
        raise ThumbprintMismatch(f"expected {digits}, the server presents {got}")


def retrieve(content):
    """One full retrieval through a ContainerView; returns the raw ObjectContent list."""
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[
                vmodl.query.PropertyCollector.ObjectSpec(
                    obj=view,
                    skip=True,
                    selectSet=[
                        vmodl.query.PropertyCollector.TraversalSpec(
                            name="view", path="view", skip=False, type=vim.view.ContainerView
                        )
                    ],
                )
            ],
            propSet=[
                vmodl.query.PropertyCollector.PropertySpec(
                    type=vim.VirtualMachine, all=False, pathSet=PROPS
                )
            ],
        )
        pc = content.propertyCollector
        objects = []
        result = pc.RetrievePropertiesEx([spec], vmodl.query.PropertyCollector.RetrieveOptions())
        while result is not None:
            objects.extend(result.objects or [])
            if not result.token:
                break
            result = pc.ContinueRetrievePropertiesEx(result.token)
        return objects
    finally:
        view.Destroy()


def guest_ips(props):
    """guest.ipAddress first, then every address of every guest NIC, without repeats."""
    ips = []
    first = props.get("guest.ipAddress")
    if first:
        ips.append(first)
    for nic in props.get("guest.net") or []:
        for ip in nic.ipAddress or []:
            if ip and ip not in ips:
                ips.append(ip)
    return ips


def disks(props):
    out = []
    for dev in props.get("config.hardware.device") or []:
        if not isinstance(dev, vim.vm.device.VirtualDisk):
            continue
        # capacityInBytes is newer (vSphere 5.5+) and some servers leave it out; KB is always there.
        size = getattr(dev, "capacityInBytes", None) or (dev.capacityInKB or 0) * 1024
        backing = dev.backing
        out.append({"capacity_bytes": size, "file": getattr(backing, "fileName", None)})
    return out


def records(objects):
    vms = []
    for oc in objects:
        props = {p.name: p.val for p in oc.propSet or []}
        # A property the server could not read arrives in missingSet; a VM without a name or a
        # disk list must show up as such rather than be dropped.
        vms.append(
            {
                "moref": oc.obj._moId,
                "name": props.get("name"),
                "bios_uuid": props.get("config.uuid"),
                "instance_uuid": props.get("config.instanceUuid"),
                "power_state": props.get("runtime.powerState"),
                "guest_ips": guest_ips(props),
                "disks": disks(props),
            }
        )
    vms.sort(key=lambda v: (v["name"] or "", v["moref"]))
    return vms


def main(argv):
    args = parse_args(argv)
    password = os.environ.get("VSPHERE_PASSWORD")
    if password is None:
        print("pyvmomi_inventory: set VSPHERE_PASSWORD", file=sys.stderr)
        return 2
    if args.thumbprint:
        try:
            check_thumbprint(args.host, args.port, args.thumbprint)
        except ThumbprintMismatch as e:
            print(f"pyvmomi_inventory: thumbprint mismatch: {e}", file=sys.stderr)
            return 4
    try:
        si = SmartConnect(host=args.host, port=args.port, user=args.user, pwd=password,
                          sslContext=ssl_context(args))
    except vim.fault.InvalidLogin as e:
        print(f"pyvmomi_inventory: InvalidLogin: {e.msg}", file=sys.stderr)
        return 3
    try:
        content = si.RetrieveContent()
        timings = []
        vms = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            vms = records(retrieve(content))
            timings.append(time.perf_counter() - t0)
        about = content.about
        out = {
            "about": {
                "fullName": about.fullName,
                "apiVersion": about.apiVersion,
                "instanceUuid": about.instanceUuid,
            },
            "count": len(vms),
            "vms": vms,
        }
        if args.time:
            out["retrieval_seconds"] = timings if args.repeat > 1 else timings[0]
            shown = ", ".join(f"{t:.3f}" for t in timings)
            print(f"pyvmomi retrieval: {len(vms)} VMs in {shown} s", file=sys.stderr)
        json.dump(out, sys.stdout, indent=None, separators=(",", ":"))
        sys.stdout.write("\n")
        return 0
    finally:
        Disconnect(si)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Exception as e:  # noqa: BLE001 - one readable line instead of a traceback
        print(f"pyvmomi_inventory: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
