//! The signed-in pages: CSRF, roles, the administration forms, machines, points and restores.

use super::*;
use crate::mgmt::catalog::{DiskView, PointView};
use crate::mgmt::PageRequest;
use crate::state::{now_rfc3339, AgentRecord};

#[actix_web::test]
async fn posts_without_the_right_csrf_token_are_refused_before_anything_happens() {
    let dir = tempfile::tempdir().unwrap();
    let core = core_in(dir.path());
    set_up(&core).await;
    let (token, csrf) = session_of(&core, "admin", PASSWORD);
    let (other_token, other_csrf) = session_of(&core, "admin", PASSWORD);
    let app = app!(core);
    let limit_before = core.upload_limit().unwrap();

    for fields in [
        vec![("upload_limit_mbit", "5")],
        vec![("upload_limit_mbit", "5"), ("csrf", "0000")],
        // Another session's token does not count.
        vec![("upload_limit_mbit", "5"), ("csrf", other_csrf.as_str())],
    ] {
        let req = post_form("/settings", &fields)
            .cookie(cookie(&token))
            .to_request();
        let resp = test::call_service(&app, req).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{fields:?}");
        assert!(body_of(resp).await.contains("CSRF token is missing"));
        assert_eq!(core.upload_limit().unwrap(), limit_before);
    }
    for path in [
        "/logout",
        "/agents/a1/revoke",
        "/settings/users/admin/delete",
        "/restores/r1/cancel",
    ] {
        let req = post_form(path, &[]).cookie(cookie(&token)).to_request();
        let resp = test::call_service(&app, req).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path}");
    }
    // Nothing above signed anybody out or deleted the admin.
    assert!(core.auth.authenticate(&token).is_ok());
    assert_eq!(core.auth.list_users().unwrap().len(), 1);

    // With the token, the change is made.
    let req = post_form(
        "/settings",
        &[("upload_limit_mbit", "8"), ("csrf", csrf.as_str())],
    )
    .cookie(cookie(&token))
    .to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(body_of(resp).await.contains("The upload limit is saved."));
    assert_eq!(core.upload_limit().unwrap(), 1_000_000);
    // A bad number is a message on the page, not a change.
    let req = post_form(
        "/settings",
        &[("upload_limit_mbit", "-3"), ("csrf", csrf.as_str())],
    )
    .cookie(cookie(&token))
    .to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(core.upload_limit().unwrap(), 1_000_000);

    // Sign-out with the token ends that session only.
    let req = post_form("/logout", &[("csrf", csrf.as_str())])
        .cookie(cookie(&token))
        .to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/login");
    let cleared = resp.response().cookies().next().unwrap();
    assert_eq!(cleared.value(), "");
    assert!(core.auth.authenticate(&token).is_err());
    assert!(core.auth.authenticate(&other_token).is_ok());
}

#[actix_web::test]
async fn viewers_see_pages_without_buttons_and_their_posts_are_forbidden() {
    let dir = tempfile::tempdir().unwrap();
    let core = core_in(dir.path());
    set_up(&core).await;
    let (admin_token, _) = session_of(&core, "admin", PASSWORD);
    let admin = core.auth.authenticate(&admin_token).unwrap();
    core.auth
        .create_user(
            &admin,
            "local",
            "viv",
            crate::mgmt::auth::Role::Viewer,
            PASSWORD,
        )
        .unwrap();
    let (token, csrf) = session_of(&core, "viv", PASSWORD);
    let app = app!(core);

    for path in ["/", "/agents", "/points", "/restores", "/settings"] {
        let req = test::TestRequest::get()
            .uri(path)
            .cookie(cookie(&token))
            .to_request();
        let resp = test::call_service(&app, req).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let page = body_of(resp).await;
        assert!(!page.contains("nav-audit"), "{path}");
        for admin_only in [
            "rotate-form",
            "upload-limit-form",
            "users-table",
            "new-token-form",
        ] {
            assert!(!page.contains(admin_only), "{admin_only} on {path}");
        }
    }
    let req = test::TestRequest::get()
        .uri("/audit")
        .cookie(cookie(&token))
        .to_request();
    assert_eq!(
        test::call_service(&app, req).await.status(),
        StatusCode::FORBIDDEN
    );

    let req = post_form(
        "/settings",
        &[("upload_limit_mbit", "5"), ("csrf", csrf.as_str())],
    )
    .cookie(cookie(&token))
    .to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(body_of(resp).await.contains("needs the admin role"));
    assert_eq!(core.upload_limit().unwrap(), 0);
    let req = post_form(
        "/settings/users",
        &[
            ("csrf", csrf.as_str()),
            ("name", "eve"),
            ("role", "admin"),
            ("password", PASSWORD),
        ],
    )
    .cookie(cookie(&token))
    .to_request();
    assert_eq!(
        test::call_service(&app, req).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(core.auth.list_users().unwrap().len(), 2);
    let req = post_form("/restores/r1/cancel", &[("csrf", csrf.as_str())])
        .cookie(cookie(&token))
        .to_request();
    assert_eq!(
        test::call_service(&app, req).await.status(),
        StatusCode::FORBIDDEN
    );
}

#[actix_web::test]
async fn admins_manage_users_and_tokens_from_the_settings_page() {
    let dir = tempfile::tempdir().unwrap();
    let core = core_in(dir.path());
    set_up(&core).await;
    let (token, csrf) = session_of(&core, "admin", PASSWORD);
    let app = app!(core);
    let post = |path: &str, fields: &[(&str, &str)]| {
        let mut all = fields.to_vec();
        all.push(("csrf", csrf.as_str()));
        post_form(path, &all).cookie(cookie(&token)).to_request()
    };

    let resp = test::call_service(
        &app,
        post(
            "/settings/users",
            &[
                ("name", "olga"),
                ("role", "operator"),
                ("password", PASSWORD),
            ],
        ),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(body_of(resp)
        .await
        .contains("User olga (operator) is created."));
    // A bad name is a message; the user list is unchanged.
    let resp = test::call_service(
        &app,
        post(
            "/settings/users",
            &[("name", "<b>x"), ("role", "viewer"), ("password", PASSWORD)],
        ),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let page = body_of(resp).await;
    assert!(page.contains("notice error"), "{page}");
    assert!(!page.contains("<b>x"));
    assert_eq!(core.auth.list_users().unwrap().len(), 2);

    let resp = test::call_service(
        &app,
        post(
            "/settings/users/olga",
            &[("action", "role"), ("role", "viewer")],
        ),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp =
        test::call_service(&app, post("/settings/users/olga", &[("action", "disable")])).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let olga = core
        .auth
        .list_users()
        .unwrap()
        .into_iter()
        .find(|u| u.name == "olga")
        .unwrap();
    assert_eq!(olga.role, crate::mgmt::auth::Role::Viewer);
    assert!(olga.disabled);
    let resp =
        test::call_service(&app, post("/settings/users/olga", &[("action", "explode")])).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = test::call_service(&app, post("/settings/users/olga/delete", &[])).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(core.auth.list_users().unwrap().len(), 1);

    // An API token's secret is shown once, and it works.
    let resp = test::call_service(
        &app,
        post(
            "/settings/tokens",
            &[("name", "script"), ("user", "admin"), ("ttl_days", "7")],
        ),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let page = body_of(resp).await;
    let secret = between(&page, "class=\"secret-value\">", "<").to_string();
    assert!(secret.starts_with("fat_"), "{secret}");
    let principal = core.auth.authenticate(&secret).unwrap();
    let resp = test::call_service(
        &app,
        post(
            &format!("/settings/tokens/{}/revoke", principal.token_id),
            &[],
        ),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(core.auth.authenticate(&secret).is_err());
    let resp = test::call_service(
        &app,
        post(
            "/settings/tokens",
            &[("name", "script"), ("ttl_days", "many")],
        ),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[actix_web::test]
async fn unknown_machines_and_agents_answer_pages_not_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let core = core_in(dir.path());
    set_up(&core).await;
    let (token, csrf) = session_of(&core, "admin", PASSWORD);
    let app = app!(core);
    let req = test::TestRequest::get()
        .uri("/machines/nope")
        .cookie(cookie(&token))
        .to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(body_of(resp).await.contains("Not found"));
    let req = post_form("/agents/nope/revoke", &[("csrf", csrf.as_str())])
        .cookie(cookie(&token))
        .to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(body_of(resp).await.contains("no agent nope"));
    // Paging parameters that do not parse fall back to the first page.
    for path in [
        "/points?offset=abc",
        "/audit?offset=-1",
        "/restores?offset=99999",
    ] {
        let req = test::TestRequest::get()
            .uri(path)
            .cookie(cookie(&token))
            .to_request();
        assert_eq!(
            test::call_service(&app, req).await.status(),
            StatusCode::OK,
            "{path}"
        );
    }
}

/// A machine with an agent, one disk and one recovery point, in the catalog.
fn protected_machine(core: &Core, id: &str, name: &str) -> PointView {
    let record = AgentRecord {
        hostname: name.into(),
        registered_at: now_rfc3339(),
        revoked: false,
        last_seen: None,
        bios_uuid: None,
    };
    core.state.put_agent(id, &record).unwrap();
    core.catalog
        .record_machine(&vault::MachineDescriptor {
            machine_id: id.into(),
            name: name.into(),
            disks: vec![vault::DiskDescriptor {
                disk_id: "disk0".into(),
                size_bytes: 8 << 30,
                label: "sda".into(),
            }],
        })
        .unwrap();
    let created_unix_ms = crate::mgmt::catalog::now_unix_ms() - 60_000;
    let point = PointView {
        machine_id: id.into(),
        point_id: "00000000000000a1".into(),
        kind: "crash".into(),
        created_at: crate::mgmt::catalog::rfc3339_of_ms(created_unix_ms),
        created_unix_ms,
        disks: vec![DiskView {
            disk_id: "disk0".into(),
            size_bytes: 8 << 30,
            label: "sda".into(),
        }],
    };
    core.catalog.record_point(&point).unwrap();
    core.catalog.refresh();
    point
}

#[actix_web::test]
async fn machines_show_on_the_dashboard_detail_and_points_pages() {
    let dir = tempfile::tempdir().unwrap();
    let core = core_in(dir.path());
    set_up(&core).await;
    let hostile = "<img src=x onerror=alert(1)>";
    let point = protected_machine(&core, "m-1", hostile);
    let (token, csrf) = session_of(&core, "admin", PASSWORD);
    let app = app!(core);
    let get = |path: &str| {
        test::TestRequest::get()
            .uri(path)
            .cookie(cookie(&token))
            .to_request()
    };

    let resp = test::call_service(&app, get("/")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let page = body_of(resp).await;
    let table = between(&page, "id=\"machines-table\"", "</table>");
    assert!(table.contains("href=\"/machines/m-1\""), "{table}");
    assert!(
        table.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{table}"
    );
    assert!(!page.contains(hostile), "names are escaped");
    assert!(
        table.contains("class=\"badge badge-"),
        "a state badge: {table}"
    );
    assert!(table.contains("8.0 GiB"), "{table}");
    // Tile subtitles short enough for one line in a tile of six at 1280 px.
    let tiles = between(&page, "id=\"summary\"", "</section>");
    assert_eq!(tiles.matches("class=\"tile-sub\"").count(), 6, "{tiles}");
    for sub in tiles.split("class=\"tile-sub\">").skip(1) {
        let text = &sub[..sub.find('<').unwrap()];
        assert!(text.chars().count() <= 25, "{text:?}");
    }
    assert!(tiles.contains(">older than target<"), "{tiles}");
    assert!(tiles.contains(" points since start<"), "{tiles}");

    let resp = test::call_service(&app, get("/machines/m-1")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let page = body_of(resp).await;
    assert_eq!(page.matches("<svg class=\"chart ").count(), 2, "{page}");
    assert!(page.contains("RPO (age of the newest point)"));
    assert!(page.contains("sda"));
    assert!(page.contains(&point.point_id));
    assert!(!page.contains(hostile));
    // The machine's own page does not repeat its name in every point's row.
    let table = between(&page, "id=\"points-table\"", "</table>");
    assert!(table.contains(&point.point_id), "{table}");
    assert!(!table.contains("<th>Machine</th>"), "{table}");
    assert!(!table.contains("href=\"/machines/"), "{table}");
    // Its restore form still suggests a file named after the machine (escaped).
    assert!(
        table.contains("value=\"-img-src-x-onerror-alert-1---"),
        "{table}"
    );

    // Points: newest first, each with its machine and a restore form for operators.
    let resp = test::call_service(&app, get("/points")).await;
    let page = body_of(resp).await;
    assert!(page.contains(&point.point_id));
    assert!(page.contains("action=\"/restores\""));
    let table = between(&page, "id=\"points-table\"", "</table>");
    assert!(table.contains("<th>Machine</th>"), "{table}");
    assert!(table.contains("href=\"/machines/m-1\""), "{table}");
    // The data path is not running in this test: the restore is refused with a message, and no
    // job is recorded.
    let req = post_form(
        "/restores",
        &[
            ("csrf", csrf.as_str()),
            ("machine_id", "m-1"),
            ("disk_id", "disk0"),
            ("point_id", point.point_id.as_str()),
            ("path", "m-1.vmdk"),
            ("format", ""),
        ],
    )
    .cookie(cookie(&token))
    .to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(body_of(resp).await.contains("The restore did not start"));
    let req = post_form(
        "/restores",
        &[
            ("csrf", csrf.as_str()),
            ("machine_id", "m-1"),
            ("format", "zip"),
        ],
    )
    .cookie(cookie(&token))
    .to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(body_of(resp).await.contains("must be raw, vhd or vmdk"));
    assert_eq!(
        core.restores
            .list(PageRequest {
                limit: None,
                offset: None
            })
            .unwrap()
            .total,
        0
    );

    // Agents: the machine's agent with a revoke button; revoking through the form works.
    let page = body_of(test::call_service(&app, get("/agents")).await).await;
    assert!(page.contains("action=\"/agents/m-1/revoke\""), "{page}");
    let req = post_form("/agents/m-1/revoke", &[("csrf", csrf.as_str())])
        .cookie(cookie(&token))
        .to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let page = body_of(resp).await;
    assert!(page.contains("is revoked"), "{page}");
    assert!(!page.contains("action=\"/agents/m-1/revoke\""));
    assert!(core.state.agent("m-1").unwrap().unwrap().revoked);
}

#[actix_web::test]
async fn viewers_get_no_restore_form() {
    let dir = tempfile::tempdir().unwrap();
    let core = core_in(dir.path());
    set_up(&core).await;
    let point = protected_machine(&core, "m-2", "db01");
    let (admin_token, _) = session_of(&core, "admin", PASSWORD);
    let admin = core.auth.authenticate(&admin_token).unwrap();
    core.auth
        .create_user(
            &admin,
            "local",
            "vic",
            crate::mgmt::auth::Role::Viewer,
            PASSWORD,
        )
        .unwrap();
    let (token, csrf) = session_of(&core, "vic", PASSWORD);
    let app = app!(core);
    let req = test::TestRequest::get()
        .uri("/points")
        .cookie(cookie(&token))
        .to_request();
    let page = body_of(test::call_service(&app, req).await).await;
    assert!(page.contains(&point.point_id));
    assert!(!page.contains("action=\"/restores\""));
    let req = test::TestRequest::get()
        .uri("/agents")
        .cookie(cookie(&token))
        .to_request();
    let page = body_of(test::call_service(&app, req).await).await;
    assert!(!page.contains("/revoke"));
    // The server checks the role anyway.
    let req = post_form("/agents/m-2/revoke", &[("csrf", csrf.as_str())])
        .cookie(cookie(&token))
        .to_request();
    assert_eq!(
        test::call_service(&app, req).await.status(),
        StatusCode::FORBIDDEN
    );
    assert!(!core.state.agent("m-2").unwrap().unwrap().revoked);
    let req = post_form(
        "/restores",
        &[
            ("csrf", csrf.as_str()),
            ("machine_id", "m-2"),
            ("disk_id", "disk0"),
        ],
    )
    .cookie(cookie(&token))
    .to_request();
    assert_eq!(
        test::call_service(&app, req).await.status(),
        StatusCode::FORBIDDEN
    );
}
