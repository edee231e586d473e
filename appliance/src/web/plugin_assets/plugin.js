// Ferry's vSphere Client plugin pages. They run framed by the vSphere Client, take the signed-in
// user's vCenter session from the client SDK and call the appliance's REST API with it
// (Authorization: vCenter-Session, X-Ferry-vCenter: the origin of the vSphere Client framing the
// page). The appliance checks the session with that vCenter and maps its user to a Ferry role.
(function () {
  "use strict";

  function status(text) {
    var el = document.getElementById("ferry-status");
    if (el) { el.textContent = text; }
  }

  // The vCenter is named by the origin of the vSphere Client that frames this page.
  function vcenterOrigin() {
    var ancestors = window.location.ancestorOrigins;
    if (ancestors && ancestors.length > 0) { return ancestors[0]; }
    try { return new URL(document.referrer).origin; } catch (e) { return ""; }
  }

  function api(path, session) {
    var url = new URL("../api/v1/" + path, document.baseURI);
    return fetch(url, {
      credentials: "omit",
      headers: {
        "Authorization": "vCenter-Session " + session,
        "X-Ferry-vCenter": vcenterOrigin()
      }
    }).then(function (res) {
      return res.json().then(function (body) {
        if (!res.ok) { throw new Error((body && body.message) || ("HTTP " + res.status)); }
        return body;
      });
    });
  }

  function cell(row, text) {
    var td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "-" : String(text);
    row.appendChild(td);
  }

  function showMachines(page) {
    var table = document.getElementById("ferry-machines");
    var body = table.querySelector("tbody");
    page.items.forEach(function (m) {
      var row = document.createElement("tr");
      cell(row, m.name || m.id);
      cell(row, m.state);
      cell(row, m.last_point ? m.last_point.created_at : null);
      cell(row, m.rpo_seconds);
      body.appendChild(row);
    });
    table.hidden = false;
    status(page.total + " protected machine(s)");
  }

  function entry(list, name, value) {
    var dt = document.createElement("dt");
    dt.textContent = name;
    var dd = document.createElement("dd");
    dd.textContent = value === null || value === undefined ? "-" : String(value);
    list.appendChild(dt);
    list.appendChild(dd);
  }

  // urn:vmomi:VirtualMachine:vm-42:<server guid> -> vm-42
  function morefOf(sdk) {
    var objects = sdk.app.getContextObjects() || [];
    var id = objects.length > 0 ? String(objects[0].id) : "";
    var parts = id.split(":");
    return parts.length >= 4 ? parts[3] : "";
  }

  function showVm(sdk, session) {
    var moref = morefOf(sdk);
    if (!moref) { status("No virtual machine selected."); return; }
    // The principal is vcenter:<Ferry vCenter id>:<user>.
    api("session", session).then(function (who) {
      var vcenterId = String(who.user).split(":")[1];
      return api("vcenters/" + encodeURIComponent(vcenterId) + "/vms/" + encodeURIComponent(moref), session);
    }).then(function (vm) {
      var list = document.getElementById("ferry-vm");
      entry(list, "Protected", vm.agent_id ? "yes (agent " + vm.agent_id + ")" : "no");
      entry(list, "Power state", vm.power_state);
      entry(list, "Guest", vm.guest_os);
      list.hidden = false;
      status("");
    }).catch(function (err) { status("Ferry: " + err.message); });
  }

  function start(sdk) {
    sdk.app.getSessionInfo(function (info) {
      var session = info && info.sessionToken;
      if (!session) { status("The vSphere Client gave no session."); return; }
      if (document.body.getAttribute("data-ferry-view") === "vm-summary") {
        showVm(sdk, session);
      } else {
        api("machines?limit=100", session).then(showMachines)
          .catch(function (err) { status("Ferry: " + err.message); });
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var sdk = window.htmlClientSdk;
    if (!sdk) { status("Open this page from the vSphere Client."); return; }
    sdk.initialize(function () { start(sdk); });
  });
}());
