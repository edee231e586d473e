// The optional "Test connection" button of the setup page: posts the vault fields to
// /api/v1/setup/vault-test and shows the answer. The form works without it.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  var form = document.getElementById("setup-form");
  var button = document.getElementById("vault-test");
  var result = document.getElementById("vault-test-result");
  if (!form || !button || !result) {
    return;
  }
  button.hidden = false;

  function value(name) {
    var field = form.elements.namedItem(name);
    return field && typeof field.value === "string" ? field.value.trim() : "";
  }

  function show(text, ok) {
    // textContent, never HTML: the message may quote what the user typed.
    result.textContent = text;
    result.className = ok === null ? "test-result" : ok ? "test-result ok" : "test-result bad";
  }

  button.addEventListener("click", function () {
    var vaultField = form.elements.namedItem("vault_url");
    var body = {
      token: value("token"),
      vault_url: value("vault_url") || (vaultField ? vaultField.placeholder : ""),
    };
    [
      "azure_access_key",
      "s3_access_key_id",
      "s3_secret_access_key",
      "s3_region",
      "s3_endpoint",
    ].forEach(function (name) {
      var v = value(name);
      if (v !== "") {
        body[name] = v;
      }
    });
    button.disabled = true;
    show("Testing the vault location…", null);
    fetch("/api/v1/setup/vault-test", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      credentials: "same-origin",
      body: JSON.stringify(body),
    })
      .then(function (response) {
        return response
          .json()
          .catch(function () {
            return { message: "HTTP " + response.status };
          })
          .then(function (answer) {
            if (response.ok) {
              show("Connection works: the vault location answers and the credentials are accepted.", true);
            } else {
              show("Test failed: " + (answer.message || "HTTP " + response.status), false);
            }
          });
      })
      .catch(function (err) {
        show("Test failed: the appliance did not answer (" + err + ").", false);
      })
      .then(function () {
        button.disabled = false;
      });
  });
});
