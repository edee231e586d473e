//! Entry points for fuzzing the parsers of server responses (hidden from docs, not an API).
//!
//! [`parse_everything`] runs the XML reader and every response parser on one buffer; it must
//! never panic, hang or allocate more than a bounded multiple of its input. [`samples`] gives
//! real responses to start mutations from.

use std::collections::BTreeMap;

use crate::inventory::{apply_update, VmInfo};
use crate::property::{parse_retrieve_result, parse_update_set};
use crate::soap::decode_parsed;
use crate::types::{MoRef, ServiceContent, UserSession};
use crate::value::Value;
use crate::xml::{self, Element, Limits, Ns};

/// Smaller than the client's limits, so a fuzzing run stays fast.
pub fn limits() -> Limits {
    Limits {
        max_bytes: 1 << 20,
        max_depth: 64,
        max_elements: 100_000,
    }
}

/// Runs every parser over `data`; returns how many accepted it (a sanity signal for tests).
pub fn parse_everything(data: &[u8]) -> usize {
    let Ok(root) = xml::parse(data, &limits()) else {
        return 0;
    };
    let mut accepted = 1;
    accepted += usize::from(Value::from_element(root.clone()).is_ok());
    // The method the document answers, so the response check passes and the parsers run.
    let method = root
        .children
        .iter()
        .find(|c| c.is(&Ns::SoapEnv, "Body"))
        .and_then(|b| b.children.first())
        .and_then(|r| r.name.strip_suffix("Response"))
        .unwrap_or("Unknown")
        .to_string();
    for status in [200, 500] {
        match decode_parsed(status, Ok(root.clone()), &method) {
            Ok(resp) => accepted += 1 + run_parsers(resp),
            // Every error renders and classifies without panicking; a typed fault is a parse too.
            Err(e) => {
                let _ = (e.to_string(), e.is_retryable());
                accepted += usize::from(e.fault_type().is_some());
            }
        }
    }
    accepted
}

fn run_parsers(resp: Element) -> usize {
    let mut accepted = 0;
    if let Some(rv) = resp.child("returnval") {
        accepted += usize::from(ServiceContent::from_element(rv).is_ok());
        accepted += usize::from(UserSession::from_element(rv).is_ok());
        accepted += usize::from(MoRef::from_element(rv).is_ok());
        accepted += usize::from(Value::from_element(rv.clone()).is_ok());
    }
    if let Ok(result) = parse_retrieve_result(resp.clone()) {
        accepted += 1;
        for object in result.objects {
            let _ = VmInfo::from_object(object);
        }
    }
    accepted += usize::from(crate::task::parse_task_state(resp.clone()).is_ok());
    accepted += usize::from(crate::events::parse_events(resp.clone()).is_ok());
    accepted += usize::from(crate::guest::parse_processes(resp.clone()).is_ok());
    accepted += usize::from(crate::extension::parse_found(resp.clone()).is_ok());
    accepted += usize::from(crate::vm::parse_optional_moref(resp.clone()).is_ok());
    if let Ok(Some(set)) = parse_update_set(resp) {
        accepted += 1;
        let mut vms = BTreeMap::new();
        for filter in &set.filters {
            for update in &filter.objects {
                apply_update(&mut vms, update);
            }
        }
    }
    accepted
}

/// Real responses (recorded from vcsim) to seed mutations.
pub fn samples() -> Vec<&'static str> {
    vec![
        include_str!("../tests/samples/01-retrieveservicecontent.response.xml"),
        include_str!("../tests/samples/02-login.response.xml"),
        include_str!("../tests/samples/02b-login-wrong-password-invalidlogin.response.xml"),
        include_str!("../tests/samples/03-currentsession-with-cookie.response.xml"),
        include_str!("../tests/samples/03a-nosession-notauthenticated.response.xml"),
        include_str!("../tests/samples/04-createcontainerview.response.xml"),
        include_str!("../tests/samples/05-retrievepropertiesex-containerview-vms.response.xml"),
        include_str!("../tests/samples/11-waitforupdatesex-task-state.response.xml"),
        include_str!(
            "../tests/samples/11b-waitforupdatesex-version-dash-vm-powerstate-modify.response.xml"
        ),
        include_str!("../tests/samples/12-vm-snapshot-property.response.xml"),
        include_str!("../tests/samples/14-querychangeddiskareas-not-supported.response.xml"),
        include_str!("../tests/samples/21b-poweronvm-task-again-invalidpowerstate.response.xml"),
        include_str!("../tests/samples/22-new-vm-properties.response.xml"),
        include_str!("../tests/samples/25-eventhistorycollector-latestpage.response.xml"),
        include_str!("../tests/samples/26-readnextevents.response.xml"),
        include_str!("../tests/samples/29-stale-cookie-after-logout-notauthenticated.response.xml"),
        include_str!("../tests/samples/vm-nics.response.xml"),
        include_str!("../tests/samples/31-guestoperationsmanager-filemanager.response.xml"),
        include_str!("../tests/samples/32-initiatefiletransfertoguest.response.xml"),
        include_str!("../tests/samples/33-startprograminguest.response.xml"),
        include_str!("../tests/samples/34-listprocessesinguest.response.xml"),
        include_str!("../tests/samples/35-registerextension.response.xml"),
        include_str!(
            "../tests/samples/35b-registerextension-duplicate-invalidargument.response.xml"
        ),
        include_str!("../tests/samples/36-findextension.response.xml"),
        include_str!("../tests/samples/36b-findextension-unknown-key.response.xml"),
        include_str!("../tests/samples/37-unregisterextension.response.xml"),
        include_str!("../tests/samples/37b-unregisterextension-notfound.response.xml"),
        include_str!("../tests/samples/38-registerextension-methodnotfound.response.xml"),
    ]
}
