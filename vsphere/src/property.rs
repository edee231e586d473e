//! The property collector: container views, RetrievePropertiesEx with paging, and filters with
//! WaitForUpdatesEx for incremental changes.

use std::time::Duration;

use crate::client::{parse_moref, parse_nothing, Client};
use crate::error::VsphereError;
use crate::soap::Request;
use crate::types::MoRef;
use crate::value::Value;
use crate::xml::Element;

/// Pages in a row without objects after which a server that keeps sending tokens is wrong.
const MAX_EMPTY_PAGES: usize = 16;

/// Which properties of which type (`PropertySpec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertySpec {
    pub type_name: String,
    pub paths: Vec<String>,
    /// Every property of the type (expensive; `paths` is ignored).
    pub all: bool,
}

/// A traversal from an object through one of its properties (`TraversalSpec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraversalSpec {
    pub name: String,
    pub type_name: String,
    pub path: String,
    pub skip: bool,
}

/// Where collection starts (`ObjectSpec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSpec {
    pub obj: MoRef,
    pub skip: bool,
    pub select_set: Vec<TraversalSpec>,
}

/// A `PropertyFilterSpec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterSpec {
    pub prop_set: Vec<PropertySpec>,
    pub object_set: Vec<ObjectSpec>,
}

impl FilterSpec {
    /// Some properties of one object.
    pub fn object(obj: &MoRef, paths: &[&str]) -> Self {
        FilterSpec {
            prop_set: vec![PropertySpec {
                type_name: obj.kind.clone(),
                paths: paths.iter().map(|p| p.to_string()).collect(),
                all: false,
            }],
            object_set: vec![ObjectSpec {
                obj: obj.clone(),
                skip: false,
                select_set: vec![],
            }],
        }
    }

    /// Some properties of every object of `type_name` in a container view.
    pub fn container_view(view: &MoRef, type_name: &str, paths: &[&str]) -> Self {
        FilterSpec {
            prop_set: vec![PropertySpec {
                type_name: type_name.to_string(),
                paths: paths.iter().map(|p| p.to_string()).collect(),
                all: false,
            }],
            object_set: vec![ObjectSpec {
                obj: view.clone(),
                skip: true,
                select_set: vec![TraversalSpec {
                    name: "traverseEntities".into(),
                    type_name: "ContainerView".into(),
                    path: "view".into(),
                    skip: false,
                }],
            }],
        }
    }

    /// Writes the spec in schema order.
    pub(crate) fn write(&self, req: &mut Request, element: &'static str) {
        req.open(element);
        for p in &self.prop_set {
            req.open("propSet").text("type", &p.type_name);
            if p.all {
                req.value("all", true);
            }
            for path in &p.paths {
                req.text("pathSet", path);
            }
            req.close();
        }
        for o in &self.object_set {
            req.open("objectSet").moref("obj", &o.obj);
            // false is the default; the recorded requests leave it out.
            if o.skip {
                req.value("skip", true);
            }
            for t in &o.select_set {
                req.open_typed("selectSet", "TraversalSpec")
                    .text("name", &t.name)
                    .text("type", &t.type_name)
                    .text("path", &t.path)
                    .value("skip", t.skip)
                    .close();
            }
            req.close();
        }
        req.close();
    }
}

/// A property that could not be read, with the fault's type name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingProperty {
    pub path: String,
    pub fault_type: String,
}

/// The properties of one object.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectContent {
    pub obj: MoRef,
    pub props: Vec<(String, Value)>,
    pub missing: Vec<MissingProperty>,
}

impl ObjectContent {
    pub fn get(&self, path: &str) -> Option<&Value> {
        self.props.iter().find(|(p, _)| p == path).map(|(_, v)| v)
    }

    pub fn take(&mut self, path: &str) -> Option<Value> {
        let i = self.props.iter().position(|(p, _)| p == path)?;
        Some(self.props.swap_remove(i).1)
    }
}

/// One page of RetrievePropertiesEx; `token` is set while more pages wait on the server.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RetrieveResult {
    pub objects: Vec<ObjectContent>,
    pub token: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectUpdateKind {
    Enter,
    Modify,
    Leave,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOp {
    Assign,
    Add,
    Remove,
    IndirectRemove,
}

/// One property change; `val` is absent for removals and for properties that became unset.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyChange {
    pub name: String,
    pub op: ChangeOp,
    pub val: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ObjectUpdate {
    pub kind: ObjectUpdateKind,
    pub obj: MoRef,
    pub changes: Vec<PropertyChange>,
    pub missing: Vec<MissingProperty>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FilterUpdate {
    pub filter: MoRef,
    pub objects: Vec<ObjectUpdate>,
}

/// The answer of WaitForUpdatesEx: pass `version` to the next call. `truncated` means more
/// changes are already waiting.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateSet {
    pub version: String,
    pub truncated: bool,
    pub filters: Vec<FilterUpdate>,
}

fn required_text(el: &Element, name: &str) -> Result<String, VsphereError> {
    el.child_text(name)
        .map(str::to_string)
        .ok_or_else(|| VsphereError::malformed(format!("<{}> has no <{name}>", el.name)))
}

fn required_moref(el: &Element, name: &str) -> Result<MoRef, VsphereError> {
    MoRef::from_element(
        el.child(name)
            .ok_or_else(|| VsphereError::malformed(format!("<{}> has no <{name}>", el.name)))?,
    )
}

/// `missingSet`: a path and a LocalizedMethodFault. A NotAuthenticated one means the whole session
/// is gone (vcsim answers RetrievePropertiesEx that way instead of with a SOAP fault).
fn missing_set(el: &Element) -> Result<Vec<MissingProperty>, VsphereError> {
    el.children_named("missingSet")
        .map(|m| {
            let fault = m.child("fault").and_then(|f| f.child("fault"));
            let fault_type = fault
                .and_then(Element::xsi_type)
                .unwrap_or("Unknown")
                .to_string();
            if fault_type == "NotAuthenticated" {
                return Err(VsphereError::NotAuthenticated);
            }
            Ok(MissingProperty {
                path: required_text(m, "path")?,
                fault_type,
            })
        })
        .collect()
}

fn object_content(el: Element) -> Result<ObjectContent, VsphereError> {
    let obj = required_moref(&el, "obj")?;
    let missing = missing_set(&el)?;
    let mut props = Vec::new();
    for child in el.children {
        if child.name != "propSet" {
            continue;
        }
        let name = required_text(&child, "name")?;
        // An unset property has no `val`: it is simply not there.
        if let Some(val) = child.children.into_iter().find(|c| c.name == "val") {
            props.push((name, Value::from_element(val)?));
        }
    }
    Ok(ObjectContent {
        obj,
        props,
        missing,
    })
}

/// Reads `RetrievePropertiesExResponse` / `ContinueRetrievePropertiesExResponse` (no `returnval`
/// means nothing matched).
pub fn parse_retrieve_result(resp: Element) -> Result<RetrieveResult, VsphereError> {
    let Some(rv) = resp.children.into_iter().find(|c| c.name == "returnval") else {
        return Ok(RetrieveResult::default());
    };
    let token = rv.child_text("token").map(str::to_string);
    let objects = rv
        .children
        .into_iter()
        .filter(|c| c.name == "objects")
        .map(object_content)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RetrieveResult { objects, token })
}

fn object_update(el: Element) -> Result<ObjectUpdate, VsphereError> {
    let kind = match el.child_text("kind") {
        Some("enter") => ObjectUpdateKind::Enter,
        Some("modify") => ObjectUpdateKind::Modify,
        Some("leave") => ObjectUpdateKind::Leave,
        other => {
            return Err(VsphereError::malformed(format!(
                "object update kind {other:?}"
            )))
        }
    };
    let obj = required_moref(&el, "obj")?;
    let missing = missing_set(&el)?;
    let mut changes = Vec::new();
    for change in el.children {
        if change.name != "changeSet" {
            continue;
        }
        let name = required_text(&change, "name")?;
        let op = match change.child_text("op") {
            Some("assign") => ChangeOp::Assign,
            Some("add") => ChangeOp::Add,
            Some("remove") => ChangeOp::Remove,
            Some("indirectRemove") => ChangeOp::IndirectRemove,
            other => return Err(VsphereError::malformed(format!("change op {other:?}"))),
        };
        let val = match change.children.into_iter().find(|c| c.name == "val") {
            Some(v) => Some(Value::from_element(v)?),
            None => None,
        };
        changes.push(PropertyChange { name, op, val });
    }
    Ok(ObjectUpdate {
        kind,
        obj,
        changes,
        missing,
    })
}

/// Reads `WaitForUpdatesExResponse`; `None` when the wait ended without changes.
pub fn parse_update_set(resp: Element) -> Result<Option<UpdateSet>, VsphereError> {
    let Some(rv) = resp.children.into_iter().find(|c| c.name == "returnval") else {
        return Ok(None);
    };
    let version = required_text(&rv, "version")?;
    let truncated = rv.child_text("truncated") == Some("true");
    let mut filters = Vec::new();
    for set in rv.children {
        if set.name != "filterSet" {
            continue;
        }
        let filter = required_moref(&set, "filter")?;
        let objects = set
            .children
            .into_iter()
            .filter(|c| c.name == "objectSet")
            .map(object_update)
            .collect::<Result<Vec<_>, _>>()?;
        filters.push(FilterUpdate { filter, objects });
    }
    Ok(Some(UpdateSet {
        version,
        truncated,
        filters,
    }))
}

pub(crate) fn retrieve_request(
    pc: &MoRef,
    specs: &[FilterSpec],
    max_objects: Option<u32>,
) -> Request {
    let mut req = Request::new("RetrievePropertiesEx", pc);
    for spec in specs {
        spec.write(&mut req, "specSet");
    }
    match max_objects {
        Some(n) => {
            req.open("options").value("maxObjects", n).close();
        }
        None => {
            req.empty("options");
        }
    }
    req
}

pub(crate) fn container_view_request(
    view_manager: &MoRef,
    container: &MoRef,
    types: &[&str],
    recursive: bool,
) -> Request {
    let mut req = Request::new("CreateContainerView", view_manager);
    req.moref("container", container);
    for t in types {
        req.text("type", t);
    }
    req.value("recursive", recursive);
    req
}

pub(crate) fn create_filter_request(
    pc: &MoRef,
    spec: &FilterSpec,
    partial_updates: bool,
) -> Request {
    let mut req = Request::new("CreateFilter", pc);
    spec.write(&mut req, "spec");
    req.value("partialUpdates", partial_updates);
    req
}

pub(crate) fn wait_request(
    pc: &MoRef,
    version: &str,
    max_wait_seconds: u32,
    max_object_updates: Option<u32>,
) -> Request {
    let mut req = Request::new("WaitForUpdatesEx", pc);
    req.text("version", version);
    req.open("options")
        .value("maxWaitSeconds", max_wait_seconds);
    if let Some(n) = max_object_updates {
        req.value("maxObjectUpdates", n);
    }
    req.close();
    req
}

impl Client {
    fn property_collector(&self) -> &MoRef {
        &self.service_content().property_collector
    }

    /// A view of every object of `types` under `container` (recursively, or its direct children).
    pub async fn create_container_view(
        &self,
        container: &MoRef,
        types: &[&str],
        recursive: bool,
    ) -> Result<MoRef, VsphereError> {
        let view_manager = self
            .service_content()
            .view_manager
            .as_ref()
            .ok_or_else(|| VsphereError::MethodNotFound {
                method: "CreateContainerView (the server has no ViewManager)".into(),
            })?;
        let req = container_view_request(view_manager, container, types, recursive);
        self.invoke(req, parse_moref).await
    }

    pub async fn destroy_view(&self, view: &MoRef) -> Result<(), VsphereError> {
        self.invoke(Request::new("DestroyView", view), parse_nothing)
            .await
    }

    /// One page of properties; continue with [`Client::continue_retrieve_properties_ex`] while
    /// `token` is set, or use [`Client::retrieve_all`].
    pub async fn retrieve_properties_ex(
        &self,
        specs: &[FilterSpec],
        max_objects: Option<u32>,
    ) -> Result<RetrieveResult, VsphereError> {
        let req = retrieve_request(self.property_collector(), specs, max_objects);
        self.invoke(req, parse_retrieve_result).await
    }

    pub async fn continue_retrieve_properties_ex(
        &self,
        token: &str,
    ) -> Result<RetrieveResult, VsphereError> {
        let mut req = Request::new("ContinueRetrievePropertiesEx", self.property_collector());
        req.text("token", token);
        self.invoke(req, parse_retrieve_result).await
    }

    /// Drops the rest of a paged result on the server.
    pub async fn cancel_retrieve_properties_ex(&self, token: &str) -> Result<(), VsphereError> {
        let mut req = Request::new("CancelRetrievePropertiesEx", self.property_collector());
        req.text("token", token);
        self.invoke(req, parse_nothing).await
    }

    /// Every object, page after page ([`crate::ClientOptions::page_size`] per page).
    pub async fn retrieve_all(
        &self,
        specs: &[FilterSpec],
    ) -> Result<Vec<ObjectContent>, VsphereError> {
        let page_size = self.options().page_size.max(1);
        let mut page = self.retrieve_properties_ex(specs, Some(page_size)).await?;
        let mut objects = std::mem::take(&mut page.objects);
        let mut empty_pages = 0;
        while let Some(token) = page.token.take() {
            page = self.continue_retrieve_properties_ex(&token).await?;
            empty_pages = if page.objects.is_empty() {
                empty_pages + 1
            } else {
                0
            };
            if empty_pages > MAX_EMPTY_PAGES {
                if let Some(token) = &page.token {
                    let _ = self.cancel_retrieve_properties_ex(token).await;
                }
                return Err(VsphereError::malformed(
                    "the server keeps sending empty pages with a continuation token",
                ));
            }
            objects.append(&mut page.objects);
        }
        Ok(objects)
    }

    /// Some properties of one object (`None` if the server returned nothing for it).
    pub async fn retrieve_one(
        &self,
        obj: &MoRef,
        paths: &[&str],
    ) -> Result<Option<ObjectContent>, VsphereError> {
        let result = self
            .retrieve_properties_ex(&[FilterSpec::object(obj, paths)], None)
            .await?;
        Ok(result.objects.into_iter().find(|o| o.obj == *obj))
    }

    /// A filter for WaitForUpdatesEx. Filters live as long as the session: see
    /// [`Client::session_generation`].
    pub async fn create_filter(
        &self,
        spec: &FilterSpec,
        partial_updates: bool,
    ) -> Result<MoRef, VsphereError> {
        let req = create_filter_request(self.property_collector(), spec, partial_updates);
        self.invoke(req, parse_moref).await
    }

    pub async fn destroy_filter(&self, filter: &MoRef) -> Result<(), VsphereError> {
        self.invoke(Request::new("DestroyPropertyFilter", filter), parse_nothing)
            .await
    }

    /// Waits up to `max_wait_seconds` for changes after `version` ("" the first time: every
    /// object then arrives as `enter`). `None` when nothing changed in that time.
    pub async fn wait_for_updates_ex(
        &self,
        version: &str,
        max_wait_seconds: u32,
        max_object_updates: Option<u32>,
    ) -> Result<Option<UpdateSet>, VsphereError> {
        let req = wait_request(
            self.property_collector(),
            version,
            max_wait_seconds,
            max_object_updates,
        );
        let timeout =
            self.options().call_timeout + Duration::from_secs(u64::from(max_wait_seconds));
        self.invoke_timeout(req, timeout, parse_update_set).await
    }

    /// Ends a WaitForUpdatesEx that is waiting in another task.
    pub async fn cancel_wait_for_updates(&self) -> Result<(), VsphereError> {
        let req = Request::new("CancelWaitForUpdates", self.property_collector());
        self.invoke(req, parse_nothing).await
    }
}

#[cfg(test)]
#[path = "property_tests.rs"]
mod tests;
