//! Events since a point: an `EventHistoryCollector` made by CreateCollectorForEvents with a
//! filter (entity, event types, begin time), read forward with ReadNextEvents, destroyed with
//! DestroyCollector. Collectors belong to the session that made them.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::client::{parse_moref, parse_nothing, Client};
use crate::error::VsphereError;
use crate::soap::Request;
use crate::types::MoRef;
use crate::xml::Element;

/// The largest `maxCount` ReadNextEvents and SetCollectorPageSize accept.
pub const MAX_EVENTS_PER_READ: i32 = 1000;

/// Which events of an entity: its own, those of its direct children, or of all below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recursion {
    OnlySelf,
    Children,
    All,
}

impl Recursion {
    fn as_str(self) -> &'static str {
        match self {
            Recursion::OnlySelf => "self",
            Recursion::Children => "children",
            Recursion::All => "all",
        }
    }
}

/// What a collector collects (`EventFilterSpec`). Empty means every event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventFilter {
    pub entity: Option<(MoRef, Recursion)>,
    /// Event type names (`VmCreatedEvent`, `VmPoweredOnEvent`) or `EventEx` type ids.
    pub event_types: Vec<String>,
    /// Only events created at or after this time (vcsim ignores it).
    pub begin_time: Option<SystemTime>,
    pub end_time: Option<SystemTime>,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub key: i64,
    pub chain_id: Option<i64>,
    /// The event's type (`VmCreatedEvent`, `EventEx`, ...).
    pub type_name: String,
    /// The type id of an `EventEx` / `ExtendedEvent`.
    pub event_type_id: Option<String>,
    /// As the server wrote it (xsd:dateTime, UTC).
    pub created_time: String,
    pub user: String,
    pub message: String,
    pub vm: Option<MoRef>,
    pub vm_name: Option<String>,
    pub host: Option<MoRef>,
    pub datacenter: Option<MoRef>,
}

/// `YYYY-MM-DDTHH:MM:SSZ` for an xsd:dateTime (whole seconds; times before 1970 become 1970).
pub(crate) fn xsd_datetime(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rest = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

fn check_count(what: &str, n: i32) -> Result<(), VsphereError> {
    if !(1..=MAX_EVENTS_PER_READ).contains(&n) {
        return Err(VsphereError::InvalidInput {
            reason: format!("{what} must be between 1 and {MAX_EVENTS_PER_READ}, not {n}"),
        });
    }
    Ok(())
}

/// `CreateCollectorForEvents` with the filter in schema order.
pub(crate) fn create_collector_request(
    event_manager: &MoRef,
    filter: &EventFilter,
) -> Result<Request, VsphereError> {
    if filter.event_types.iter().any(|t| t.trim().is_empty()) {
        return Err(VsphereError::InvalidInput {
            reason: "an event type is empty".into(),
        });
    }
    if let (Some(begin), Some(end)) = (filter.begin_time, filter.end_time) {
        if end < begin {
            return Err(VsphereError::InvalidInput {
                reason: "the end time is before the begin time".into(),
            });
        }
    }
    let mut req = Request::new("CreateCollectorForEvents", event_manager);
    req.open("filter");
    if let Some((entity, recursion)) = &filter.entity {
        req.open("entity")
            .moref("entity", entity)
            .text("recursion", recursion.as_str())
            .close();
    }
    if filter.begin_time.is_some() || filter.end_time.is_some() {
        req.open("time");
        if let Some(begin) = filter.begin_time {
            req.text("beginTime", &xsd_datetime(begin));
        }
        if let Some(end) = filter.end_time {
            req.text("endTime", &xsd_datetime(end));
        }
        req.close();
    }
    // Without it vCenter leaves fullFormattedMessage out.
    req.value("disableFullMessage", false);
    for t in &filter.event_types {
        req.text("eventTypeId", t);
    }
    req.close();
    Ok(req)
}

fn moref_in(el: &Element, argument: &str, field: &str) -> Option<MoRef> {
    el.child(argument)
        .and_then(|a| a.child(field))
        .and_then(|m| MoRef::from_element(m).ok())
}

/// Reads one event of a ReadNextEvents answer.
pub(crate) fn parse_event(el: &Element) -> Result<Event, VsphereError> {
    let key = el
        .child_text("key")
        .and_then(|k| k.trim().parse::<i64>().ok())
        .ok_or_else(|| VsphereError::malformed("an event without a numeric key"))?;
    let text = |name: &str| el.child_text(name).map(str::to_string);
    Ok(Event {
        key,
        chain_id: el.child_text("chainId").and_then(|c| c.trim().parse().ok()),
        type_name: el.xsi_type().unwrap_or("Event").to_string(),
        event_type_id: text("eventTypeId").or_else(|| text("eventId")),
        created_time: text("createdTime").unwrap_or_default(),
        user: text("userName").unwrap_or_default(),
        message: text("fullFormattedMessage").unwrap_or_default(),
        vm: moref_in(el, "vm", "vm"),
        vm_name: el
            .child("vm")
            .and_then(|v| v.child_text("name"))
            .map(str::to_string),
        host: moref_in(el, "host", "host"),
        datacenter: moref_in(el, "datacenter", "datacenter"),
    })
}

pub(crate) fn parse_events(resp: Element) -> Result<Vec<Event>, VsphereError> {
    resp.children_named("returnval").map(parse_event).collect()
}

impl Client {
    fn event_manager(&self) -> Result<MoRef, VsphereError> {
        self.service_content()
            .event_manager
            .clone()
            .ok_or_else(|| VsphereError::MethodNotFound {
                method: "CreateCollectorForEvents (the server has no EventManager)".into(),
            })
    }

    /// A collector of the events `filter` selects, positioned before the oldest one.
    pub async fn create_collector_for_events(
        &self,
        filter: &EventFilter,
    ) -> Result<MoRef, VsphereError> {
        let req = create_collector_request(&self.event_manager()?, filter)?;
        self.invoke(req, parse_moref).await
    }

    /// The next (newer) `max` events at most; empty when the collector has read them all.
    pub async fn read_next_events(
        &self,
        collector: &MoRef,
        max: i32,
    ) -> Result<Vec<Event>, VsphereError> {
        check_count("the number of events", max)?;
        let mut req = Request::new("ReadNextEvents", collector);
        req.value("maxCount", max);
        self.invoke(req, parse_events).await
    }

    /// The size of the collector's latest page (vcsim reads ReadNextEvents from that page
    /// only, 10 events by default).
    pub async fn set_collector_page_size(
        &self,
        collector: &MoRef,
        size: i32,
    ) -> Result<(), VsphereError> {
        check_count("the page size", size)?;
        let mut req = Request::new("SetCollectorPageSize", collector);
        req.value("maxCount", size);
        self.invoke(req, parse_nothing).await
    }

    pub async fn destroy_collector(&self, collector: &MoRef) -> Result<(), VsphereError> {
        self.invoke(Request::new("DestroyCollector", collector), parse_nothing)
            .await
    }
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
