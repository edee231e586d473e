//! A push request that names a stored guest credential (`auth: {"kind": "credential", "id"}`) is
//! turned into the login it stands for before the job is planned, so the rest of the job never
//! knows the difference; the job's view keeps the credential's id (never its secret).

use super::{PushAuth, PushRequest};
use crate::mgmt::guest_credentials::{GuestCredentials, GuestSecret};
use crate::mgmt::MgmtError;

/// `req` with a stored credential replaced by its user name and secret, and the credential's id
/// (`None` when the request carried its own secret).
pub(super) fn resolve(
    creds: Option<&GuestCredentials>,
    mut req: PushRequest,
) -> Result<(PushRequest, Option<String>), MgmtError> {
    let id = match &req.auth {
        PushAuth::Credential { id } => id.clone(),
        _ => {
            if req.username.is_empty() {
                return Err(MgmtError::invalid(
                    "username",
                    "give the guest user, or a stored credential in auth",
                ));
            }
            return Ok((req, None));
        }
    };
    let creds = creds.ok_or_else(|| {
        MgmtError::Internal("guest credentials are not attached to push jobs".into())
    })?;
    let (username, secret) = creds.resolve(&id).map_err(|e| match e {
        MgmtError::NotFound(_) => MgmtError::invalid(
            "auth.id",
            format!("no stored guest credential {id} (see GET /api/v1/guest-credentials)"),
        ),
        other => other,
    })?;
    if !req.username.is_empty() && req.username != username {
        return Err(MgmtError::invalid(
            "username",
            format!(
                "the credential {id} logs in as {username}; leave username out or give the same"
            ),
        ));
    }
    req.username = username;
    req.auth = match secret {
        GuestSecret::Password { password } => PushAuth::Password { password },
        GuestSecret::PrivateKey {
            private_key,
            passphrase,
        } => PushAuth::PrivateKey {
            private_key,
            passphrase,
        },
    };
    Ok((req, Some(id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mgmt::guest_credentials::NewGuestCredential;
    use crate::mgmt::vcenters::testkit::admin;
    use crate::state::State;

    fn request(body: serde_json::Value) -> PushRequest {
        serde_json::from_value(body).expect("a push request")
    }

    fn field(err: MgmtError) -> String {
        match err {
            MgmtError::InvalidField { field, .. } => field,
            other => panic!("not an invalid field: {other:?}"),
        }
    }

    #[test]
    fn a_stored_credential_becomes_its_login_and_bad_references_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        let creds = GuestCredentials::new(state, dir.path().to_path_buf()).unwrap();
        let stored = creds
            .add(
                &admin(),
                "test",
                NewGuestCredential {
                    name: "linux-root".into(),
                    username: "root".into(),
                    auth: GuestSecret::Password {
                        password: "pw-1".into(),
                    },
                },
            )
            .unwrap();
        let by_id = |username: &str, id: &str| {
            request(
                serde_json::json!({"host": "10.0.0.5", "username": username, "vm": "web",
                "auth": {"kind": "credential", "id": id}}),
            )
        };

        let (req, id) = resolve(Some(&creds), by_id("", &stored.id)).unwrap();
        assert_eq!(id.as_deref(), Some(stored.id.as_str()));
        assert_eq!(req.username, "root");
        assert!(matches!(req.auth, PushAuth::Password { ref password } if password == "pw-1"));
        // The same user given explicitly is fine; another is a mistake worth saying.
        resolve(Some(&creds), by_id("root", &stored.id)).unwrap();
        assert_eq!(
            field(resolve(Some(&creds), by_id("admin", &stored.id)).unwrap_err()),
            "username"
        );
        assert_eq!(
            field(resolve(Some(&creds), by_id("", "nope")).unwrap_err()),
            "auth.id"
        );
        // Without a credential the request must name its user.
        let own = request(serde_json::json!({"host": "h", "vm": "web",
            "auth": {"kind": "password", "password": "x"}}));
        assert_eq!(field(resolve(Some(&creds), own).unwrap_err()), "username");
        // Unknown fields inside auth are refused by the decoder.
        assert!(
            serde_json::from_value::<PushRequest>(serde_json::json!({"host": "h", "vm": "w",
            "auth": {"kind": "credential", "id": "x", "password": "y"}}))
            .is_err()
        );
    }
}
