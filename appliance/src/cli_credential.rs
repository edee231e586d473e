//! `appliance credential ...`: the guest credential sets push installs refer to, through the daemon.
//! Secrets are read from files, never from the command line (it shows in `ps` and shell history).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{ArgGroup, Args, Subcommand};
use serde_json::{json, Value};

use crate::api_client::ApiClient;
use crate::api_cmd::{print_json, segment, table, text};
use crate::api_cmd_push::{auth_body, LoginFiles};

#[derive(Debug, Subcommand)]
pub enum CredentialCommand {
    /// Store a guest login under a name (admin)
    Add(CredentialAddArgs),
    /// List stored guest logins (never their secrets)
    List {
        /// Print a JSON array instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Rename a stored login, change its user or replace its secret (admin)
    Update(CredentialUpdateArgs),
    /// Forget a stored login (admin)
    Remove {
        /// The credential id (see `credential list`)
        id: String,
    },
}

/// The secret of a login: a password file, or a private key file with an optional passphrase file.
#[derive(Debug, Args)]
pub struct SecretArgs {
    /// File holding the password (one trailing newline is ignored)
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// OpenSSH or PEM private key file
    #[arg(long, value_name = "FILE", conflicts_with = "password_file")]
    pub key_file: Option<PathBuf>,
    /// File holding the private key's passphrase
    #[arg(long, value_name = "FILE", requires = "key_file")]
    pub key_passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("secret").required(true).args(["password_file", "key_file"])))]
pub struct CredentialAddArgs {
    /// A unique name, e.g. linux-root
    #[arg(long)]
    pub name: String,
    /// The guest user to log in as
    #[arg(long)]
    pub username: String,
    #[command(flatten)]
    pub secret: SecretArgs,
    /// Print the API's JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CredentialUpdateArgs {
    /// The credential id
    pub id: String,
    /// New name
    #[arg(long)]
    pub name: Option<String>,
    /// New guest user
    #[arg(long)]
    pub username: Option<String>,
    #[command(flatten)]
    pub secret: SecretArgs,
}

impl SecretArgs {
    /// The `auth` object of the API, or `None` when no secret was given.
    pub fn auth(&self) -> anyhow::Result<Option<Value>> {
        auth_body(&LoginFiles {
            key_file: self.key_file.as_deref(),
            key_passphrase_file: self.key_passphrase_file.as_deref(),
            password_file: self.password_file.as_deref(),
            credential: None,
        })
    }
}

fn rows(items: &[Value]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|c| {
            vec![
                text(c, "id").to_string(),
                text(c, "name").to_string(),
                text(c, "username").to_string(),
                text(c, "kind").to_string(),
                text(c, "created_by").to_string(),
                c["updated_at"]
                    .as_str()
                    .unwrap_or(text(c, "created_at"))
                    .to_string(),
            ]
        })
        .collect()
}

pub async fn run(
    api: &ApiClient,
    command: CredentialCommand,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match command {
        CredentialCommand::Add(args) => {
            let auth = args
                .secret
                .auth()?
                .context("give --password-file or --key-file")?;
            let body = json!({"name": args.name, "username": args.username, "auth": auth});
            let view: Value = api.post("/api/v1/guest-credentials", &body).await?;
            if args.json {
                return print_json(out, &view);
            }
            writeln!(
                out,
                "stored guest login {} ({}, user {}); use it with `appliance push install --credential {}`",
                text(&view, "name"),
                text(&view, "id"),
                text(&view, "username"),
                text(&view, "id")
            )?;
        }
        CredentialCommand::List { json } => {
            let items = api.get_all("/api/v1/guest-credentials").await?;
            if json {
                return print_json(out, &items);
            }
            if items.is_empty() {
                writeln!(
                    out,
                    "no guest logins: add one with `appliance credential add`"
                )?;
                return Ok(());
            }
            table(
                out,
                &["ID", "NAME", "USER", "KIND", "BY", "CHANGED"],
                &rows(&items),
            )?;
        }
        CredentialCommand::Update(args) => {
            let mut body = serde_json::Map::new();
            if let Some(name) = args.name {
                body.insert("name".into(), json!(name));
            }
            if let Some(username) = args.username {
                body.insert("username".into(), json!(username));
            }
            if let Some(auth) = args.secret.auth()? {
                body.insert("auth".into(), auth);
            }
            if body.is_empty() {
                anyhow::bail!(
                    "nothing to change: give --name, --username, --password-file or --key-file"
                );
            }
            let path = format!("/api/v1/guest-credentials/{}", segment(&args.id));
            let view: Value = api.patch(&path, &body).await?;
            writeln!(
                out,
                "updated guest login {} ({})",
                text(&view, "name"),
                text(&view, "id")
            )?;
        }
        CredentialCommand::Remove { id } => {
            api.delete(&format!("/api/v1/guest-credentials/{}", segment(&id)))
                .await?;
            writeln!(out, "removed guest login {id}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret pass\n").unwrap();
        let args = SecretArgs {
            password_file: Some(pw),
            key_file: None,
            key_passphrase_file: None,
        };
        assert_eq!(
            args.auth().unwrap().unwrap(),
            json!({"kind": "password", "password": "s3cret pass"})
        );
        let key = dir.path().join("key");
        std::fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
        let args = SecretArgs {
            password_file: None,
            key_file: Some(key),
            key_passphrase_file: None,
        };
        assert_eq!(args.auth().unwrap().unwrap()["kind"], "private_key");
        let none = SecretArgs {
            password_file: None,
            key_file: None,
            key_passphrase_file: None,
        };
        assert!(none.auth().unwrap().is_none());
        let missing = SecretArgs {
            password_file: Some(dir.path().join("absent")),
            key_file: None,
            key_passphrase_file: None,
        };
        let err = missing.auth().unwrap_err().to_string();
        assert!(err.contains("absent"), "{err}");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let args = SecretArgs {
            password_file: Some(empty),
            key_file: None,
            key_passphrase_file: None,
        };
        assert!(args.auth().unwrap_err().to_string().contains("empty"));
    }

    #[test]
    fn rows_never_hold_more_than_the_view() {
        let items = vec![json!({"id": "c1", "name": "linux-root", "username": "root",
            "kind": "password", "created_by": "admin", "created_at": "2026-11-26T10:00:00Z",
            "updated_at": null})];
        assert_eq!(
            rows(&items)[0],
            vec![
                "c1",
                "linux-root",
                "root",
                "password",
                "admin",
                "2026-11-26T10:00:00Z"
            ]
        );
    }
}
