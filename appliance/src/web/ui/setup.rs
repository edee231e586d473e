//! `/setup`: the first-boot form, and the result page shown once (passphrases, recovery kit).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, bare, percent_encode};
use super::{check_origin, lenient_query, pre_session_html, see_other, status_of, UiResult};
use crate::mgmt::setup::{SetupPhase, SetupRequest, SetupResult, SetupStatus};
use crate::mgmt::{Core, MgmtError};
use crate::web::extract::source;

/// The form as posted. Every field defaults to empty, so a missing one is a validation message,
/// not a parse failure.
#[derive(Clone, Default, Deserialize)]
#[serde(default)]
pub struct SetupForm {
    pub token: String,
    pub admin_password: String,
    pub admin_password_confirm: String,
    pub vault_url: String,
    pub azure_access_key: String,
    pub s3_access_key_id: String,
    pub s3_secret_access_key: String,
    pub s3_region: String,
    pub s3_endpoint: String,
    pub vault_passphrase: String,
    pub registration_passphrase: String,
}

impl SetupForm {
    /// What is shown again after an error: what the user typed, but no password, passphrase or key.
    fn without_secrets(self) -> SetupForm {
        SetupForm {
            admin_password: String::new(),
            admin_password_confirm: String::new(),
            azure_access_key: String::new(),
            s3_secret_access_key: String::new(),
            vault_passphrase: String::new(),
            registration_passphrase: String::new(),
            ..self
        }
    }

    fn request(&self) -> SetupRequest {
        SetupRequest {
            token: self.token.trim().to_string(),
            admin_password: self.admin_password.clone(),
            vault_url: optional(&self.vault_url),
            azure_access_key: optional(&self.azure_access_key),
            s3_access_key_id: optional(&self.s3_access_key_id),
            s3_secret_access_key: optional(&self.s3_secret_access_key),
            s3_region: optional(&self.s3_region),
            s3_endpoint: optional(&self.s3_endpoint),
            vault_passphrase: optional(&self.vault_passphrase),
            registration_passphrase: optional(&self.registration_passphrase),
        }
    }
}

impl std::fmt::Debug for SetupForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetupForm")
            .field("vault_url", &self.vault_url)
            .finish_non_exhaustive()
    }
}

/// An empty (or blank) form field means "not given".
fn optional(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_string())
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct TokenQuery {
    token: String,
}

/// The error of a submission: shown at the top, and next to its field when it has one.
struct FormError {
    field: Option<String>,
    message: String,
}

impl FormError {
    fn from_mgmt(err: &MgmtError) -> FormError {
        match err {
            MgmtError::InvalidField { field, message } => FormError {
                field: Some(field.clone()),
                message: message.clone(),
            },
            MgmtError::BadSetupToken => FormError {
                field: Some("token".into()),
                message: err.to_string(),
            },
            other => FormError {
                field: None,
                message: other.to_string(),
            },
        }
    }

    fn at(&self, field: &str) -> Option<&str> {
        (self.field.as_deref() == Some(field)).then_some(self.message.as_str())
    }
}

pub async fn form(core: web::Data<Core>, req: HttpRequest) -> UiResult {
    if core.setup.is_complete() {
        return Ok(see_other("/login"));
    }
    let query: TokenQuery = lenient_query(&req);
    let status = core.setup.status();
    let values = SetupForm {
        token: query.token,
        vault_url: status.default_vault_url.clone(),
        ..SetupForm::default()
    };
    Ok(pre_session_html(
        StatusCode::OK,
        render_form(&status, &values, None),
    ))
}

pub async fn submit(
    core: web::Data<Core>,
    req: HttpRequest,
    form: web::Form<SetupForm>,
) -> UiResult {
    if core.setup.is_complete() {
        return Ok(see_other("/login"));
    }
    check_origin(&req)?;
    let form = form.into_inner();
    if form.admin_password != form.admin_password_confirm {
        let error = FormError {
            field: Some("admin_password_confirm".into()),
            message: "the two passwords differ; type the same password twice".into(),
        };
        let page = render_form(&core.setup.status(), &form.without_secrets(), Some(&error));
        return Ok(pre_session_html(StatusCode::BAD_REQUEST, page));
    }
    match core.setup.submit(form.request(), &source(&req)).await {
        Ok(result) => Ok(pre_session_html(StatusCode::OK, render_result(&result))),
        Err(MgmtError::SetupComplete) => Ok(see_other("/login")),
        Err(err) => {
            let error = FormError::from_mgmt(&err);
            let page = render_form(&core.setup.status(), &form.without_secrets(), Some(&error));
            Ok(pre_session_html(status_of(&err), page))
        }
    }
}

/// One labelled field with its one-line explanation and, after a failed submission, its error.
fn field(name: &str, label: &str, help: &str, error: Option<&FormError>, input: Markup) -> Markup {
    let message = error.and_then(|e| e.at(name));
    html! {
        div.field.has-error[message.is_some()] {
            label for=(name) { (label) }
            (input)
            p.help id=(format!("{name}-help")) { (help) }
            @if let Some(message) = message {
                p.field-error role="alert" { (message) }
            }
        }
    }
}

fn text_input(name: &str, value: &str, placeholder: &str) -> Markup {
    html! {
        input type="text" id=(name) name=(name) value=(value) placeholder=(placeholder)
            autocomplete="off" spellcheck="false" aria-describedby=(format!("{name}-help"));
    }
}

fn secret_input(name: &str, autocomplete: &str, required: bool) -> Markup {
    html! {
        input type="password" id=(name) name=(name) autocomplete=(autocomplete) required[required]
            aria-describedby=(format!("{name}-help"));
    }
}

fn render_form(status: &SetupStatus, values: &SetupForm, error: Option<&FormError>) -> Markup {
    let body = html! {
        section.card {
            h1 { "Set up this appliance" }
            p.lead {
                "This page runs once. It creates the administrator, connects the vault that stores "
                "recovery points and sets the passphrases. Nothing is written until every field checks out."
            }
            @if status.phase == SetupPhase::Pending {
                p.notice.warn {
                    "A previous setup was accepted but not finished; the appliance completes it at "
                    "start. Reload this page in a moment."
                }
            }
            @if let Some(error) = error {
                p.error role="alert" { "Setup was not completed: " (error.message) }
            }
            form #setup-form method="post" action="/setup" autocomplete="off" {
                fieldset {
                    legend { "1. Setup token" }
                    (field("token", "Setup token",
                        "Proves you are at this appliance's console: it is in the file setup-token of the data folder and in the service log.",
                        error, html! {
                            input type="text" id="token" name="token" value=(values.token) required
                                autocomplete="off" spellcheck="false" aria-describedby="token-help";
                        }))
                }
                fieldset {
                    legend { "2. Administrator" }
                    p.help { "You sign in as " code { "admin" } " with this password. It must follow these rules:" }
                    // For password managers: the user name that goes with the new password.
                    input type="text" name="username" value="admin" autocomplete="username" hidden readonly;
                    ul.rules {
                        @for rule in &status.password_rules { li { (rule) } }
                    }
                    (field("admin_password", "Administrator password",
                        "Used to sign in to this console and the API; you can add more users later.",
                        error, secret_input("admin_password", "new-password", true)))
                    (field("admin_password_confirm", "Repeat the password",
                        "Type it again to rule out a typing mistake.",
                        error, secret_input("admin_password_confirm", "new-password", true)))
                }
                fieldset {
                    legend { "3. Network" }
                    p.help { "As the appliance sees it. The image or the hypervisor configures the network; check that agents can reach these addresses." }
                    @if status.network.is_empty() {
                        p.muted { "No network information is available." }
                    } @else {
                        ul.network { @for line in &status.network { li { code { (line) } } } }
                    }
                }
                fieldset {
                    legend { "4. Vault (where recovery points are stored)" }
                    (field("vault_url", "Vault location",
                        "A folder on this appliance, az://account/container/prefix (Azure Blob) or s3://bucket/prefix (S3 or compatible). Leave as is to use the local default.",
                        error, text_input("vault_url", &values.vault_url, &status.default_vault_url)))
                    div.optional {
                        p.optional-title { "Cloud credentials — only for az:// or s3:// vaults, leave empty otherwise" }
                        (field("azure_access_key", "Azure storage account key",
                            "Optional. The access key of the storage account in an az:// location.",
                            error, secret_input("azure_access_key", "off", false)))
                        (field("s3_access_key_id", "S3 access key id",
                            "Optional. Empty: the appliance's environment or instance role provides credentials.",
                            error, text_input("s3_access_key_id", &values.s3_access_key_id, "")))
                        (field("s3_secret_access_key", "S3 secret access key",
                            "Optional. The secret that belongs to the access key id.",
                            error, secret_input("s3_secret_access_key", "off", false)))
                        (field("s3_region", "S3 region",
                            "Optional. For example eu-central-1; empty uses the default region.",
                            error, text_input("s3_region", &values.s3_region, "")))
                        (field("s3_endpoint", "S3 endpoint",
                            "Optional. Only for S3-compatible storage that is not AWS, for example https://minio.example:9000.",
                            error, text_input("s3_endpoint", &values.s3_endpoint, "")))
                    }
                    div.test-row {
                        button #vault-test.btn.btn-secondary type="button" hidden {
                            "Test connection"
                        }
                        output #vault-test-result for="vault_url token" aria-live="polite" {}
                    }
                }
                fieldset {
                    legend { "5. Passphrases" }
                    (field("vault_passphrase", "Vault passphrase",
                        "Encrypts everything in the vault. Leave empty to generate a strong one (recommended). Without it no restore is possible: it is shown once on the next page.",
                        error, secret_input("vault_passphrase", "new-password", false)))
                    (field("registration_passphrase", "Agent registration passphrase",
                        "Agents present it once to register with this appliance. Leave empty to generate one; an administrator can rotate it later.",
                        error, secret_input("registration_passphrase", "new-password", false)))
                }
                div.actions {
                    button #setup-submit.btn.btn-primary type="submit" { "Complete setup" }
                }
            }
        }
    };
    bare("Setup", &[layout::SETUP_JS_HREF], body)
}

/// The recovery kit as a download, inline (the page is shown once and nothing else keeps the kit).
fn kit_href(kit: &str) -> String {
    format!("data:text/plain;charset=utf-8,{}", percent_encode(kit))
}

fn render_result(result: &SetupResult) -> Markup {
    let body = html! {
        section #setup-result.card {
            h1 { "Setup complete" }
            p.notice.warn role="alert" {
                strong { "Write these down now. " }
                "This page is shown once. Without the vault passphrase the recovery points cannot be "
                "read, not even by this appliance after a reinstall."
            }
            dl.kv {
                dt { "Administrator" } dd { code { (result.admin_user) } }
                dt { "Vault" } dd { code { (result.vault_url) } }
                dt { "Vault passphrase" }
                dd { code #vault-passphrase.secret-value { (result.vault_passphrase) } }
                dt { "Agent registration passphrase" }
                dd { code #registration-passphrase.secret-value { (result.registration_passphrase) } }
                dt { "CA fingerprint (SHA-256)" }
                dd { (layout::fingerprint(Some("ca-fingerprint"), &result.ca_fingerprint)) }
            }
            h2 { "Recovery kit" }
            p.help {
                "Everything needed to restore without this appliance. Download it and keep it apart "
                "from the vault (a password manager or a printed copy in a safe)."
            }
            pre #recovery-kit { (result.recovery_kit) }
            div.actions {
                a #recovery-kit-download.btn.btn-secondary href=(kit_href(&result.recovery_kit))
                    download="ferry-recovery-kit.txt" { "Download the recovery kit" }
                a #continue-login.btn.btn-primary href="/login" { "Continue to sign in" }
            }
        }
    };
    bare("Setup complete", &[], body)
}
