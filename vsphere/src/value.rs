//! Property values, typed from `xsi:type` (resolved by namespace, whatever the prefix).
//!
//! Without the WSDL a field inside a data object has no declared type on the wire; such leaves
//! stay text ([`Value::String`]) and the accessors (`as_i64`, `as_bool`) parse them on demand.

use crate::error::VsphereError;
use crate::types::MoRef;
use crate::xml::{Element, Ns};

/// A property value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    /// xsd:int, xsd:short, xsd:byte.
    Int(i32),
    Long(i64),
    /// xsd:float, xsd:double.
    Double(f64),
    /// xsd:string, xsd:dateTime and other text; also untyped leaves inside data objects.
    String(String),
    /// A vim25 enumeration (`VirtualMachinePowerState`, `TaskInfoState`).
    Enum {
        type_name: String,
        value: String,
    },
    MoRef(MoRef),
    /// `ArrayOfX`.
    Array(Vec<Value>),
    Object(DataObject),
}

/// A data object: its type (empty when the wire does not say) and its fields in document order.
/// A field may repeat (an array field inside an object, such as `GuestNicInfo.ipAddress`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DataObject {
    pub type_name: String,
    pub fields: Vec<(String, Value)>,
}

impl DataObject {
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub fn fields_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.fields
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v)
    }
}

/// How the children of an `ArrayOfX` without their own `xsi:type` are read.
enum ItemKind {
    Xsd(&'static str),
    MoRef,
    Object(String),
}

impl Value {
    /// Reads a typed value element (`val`, `returnval`, an array item).
    pub fn from_element(mut el: Element) -> Result<Value, VsphereError> {
        let Some(ty) = el.xsi_type.take() else {
            return Ok(Self::untyped(el, None));
        };
        if ty.ns == Ns::Xsd || (ty.ns == Ns::None && is_xsd_name(&ty.name)) {
            return Self::xsd(&ty.name, el.text);
        }
        if ty.name == "ManagedObjectReference" {
            return MoRef::from_element(&el).map(Value::MoRef);
        }
        if let Some(item) = ty.name.strip_prefix("ArrayOf") {
            let kind = match item {
                "String" => ItemKind::Xsd("string"),
                "Int" => ItemKind::Xsd("int"),
                "Long" => ItemKind::Xsd("long"),
                "Short" => ItemKind::Xsd("short"),
                "Byte" => ItemKind::Xsd("byte"),
                "Boolean" => ItemKind::Xsd("boolean"),
                "Double" | "Float" => ItemKind::Xsd("double"),
                "AnyType" => ItemKind::Xsd("string"),
                "ManagedObjectReference" => ItemKind::MoRef,
                other => ItemKind::Object(other.to_string()),
            };
            let items = el
                .children
                .into_iter()
                .map(|child| match (&child.xsi_type, &kind) {
                    (Some(_), _) => Value::from_element(child),
                    (None, ItemKind::Xsd(name)) => Self::xsd(name, child.text),
                    (None, ItemKind::MoRef) => MoRef::from_element(&child).map(Value::MoRef),
                    (None, ItemKind::Object(type_name)) => {
                        Ok(Self::untyped(child, Some(type_name.clone())))
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Value::Array(items));
        }
        if el.children.is_empty() && !el.text.is_empty() {
            return Ok(Value::Enum {
                type_name: ty.name,
                value: el.text,
            });
        }
        Ok(Self::object(el, ty.name))
    }

    fn object(el: Element, type_name: String) -> Value {
        let fields = el
            .children
            .into_iter()
            .map(|child| {
                let name = child.name.clone();
                // A field with a type of its own is read by it; a bad one stays as text.
                let value = if child.xsi_type.is_some() {
                    let fallback = child.text.clone();
                    Value::from_element(child).unwrap_or(Value::String(fallback))
                } else {
                    Self::untyped(child, None)
                };
                (name, value)
            })
            .collect();
        Value::Object(DataObject { type_name, fields })
    }

    /// A field without `xsi:type`: an object if it has children, a reference if it has a `type`
    /// attribute, else text.
    fn untyped(el: Element, type_name: Option<String>) -> Value {
        if !el.children.is_empty() || (type_name.is_some() && el.text.is_empty()) {
            return Self::object(el, type_name.unwrap_or_default());
        }
        if let Some(kind) = el.attr("type").map(str::to_string) {
            if !el.text.is_empty() {
                return Value::MoRef(MoRef::new(kind, el.text));
            }
        }
        Value::String(el.text)
    }

    fn xsd(name: &str, text: String) -> Result<Value, VsphereError> {
        let bad = |what: &str| VsphereError::malformed(format!("bad xsd:{what} value {text:?}"));
        let t = text.trim();
        Ok(match name {
            "boolean" => match t {
                "true" | "1" => Value::Bool(true),
                "false" | "0" => Value::Bool(false),
                _ => return Err(bad(name)),
            },
            "int" | "short" | "byte" => Value::Int(t.parse().map_err(|_| bad(name))?),
            "long" => Value::Long(t.parse().map_err(|_| bad(name))?),
            "float" | "double" => Value::Double(t.parse().map_err(|_| bad(name))?),
            _ => Value::String(text),
        })
    }

    /// Text of a string or an enumeration.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            Value::Enum { value, .. } => Some(value),
            _ => None,
        }
    }

    /// A number, also parsed from text (untyped fields are text).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(i64::from(*i)),
            Value::Long(l) => Some(*l),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            Value::String(s) => match s.trim() {
                "true" | "1" => Some(true),
                "false" | "0" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    pub fn as_moref(&self) -> Option<&MoRef> {
        match self {
            Value::MoRef(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&DataObject> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    /// The vim25 type of an object or enumeration.
    pub fn type_name(&self) -> Option<&str> {
        match self {
            Value::Object(o) => Some(&o.type_name),
            Value::Enum { type_name, .. } => Some(type_name),
            _ => None,
        }
    }

    /// A field of a data object.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.as_object().and_then(|o| o.field(name))
    }

    /// A dotted path through data objects (`backing.fileName`).
    pub fn path(&self, dotted: &str) -> Option<&Value> {
        dotted.split('.').try_fold(self, |v, part| v.field(part))
    }
}

fn is_xsd_name(name: &str) -> bool {
    matches!(
        name,
        "string" | "boolean" | "int" | "short" | "byte" | "long" | "float" | "double" | "dateTime"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{parse, Limits};

    fn value(xml: &str) -> Result<Value, VsphereError> {
        Value::from_element(parse(xml.as_bytes(), &Limits::default())?)
    }

    const NS: &str = r#"xmlns="urn:vim25" xmlns:q="http://www.w3.org/2001/XMLSchema-instance" xmlns:s="http://www.w3.org/2001/XMLSchema""#;

    #[test]
    fn scalars_by_xsi_type_under_any_prefix() {
        let v = |ty: &str, text: &str| value(&format!(r#"<val {NS} q:type="{ty}">{text}</val>"#));
        assert_eq!(
            v("s:string", " a b ").unwrap(),
            Value::String(" a b ".into())
        );
        assert_eq!(v("s:int", "1000").unwrap(), Value::Int(1000));
        assert_eq!(
            v("s:long", "10737418240").unwrap(),
            Value::Long(10737418240)
        );
        assert_eq!(v("s:boolean", "true").unwrap(), Value::Bool(true));
        assert_eq!(v("s:double", "1.5").unwrap(), Value::Double(1.5));
        assert!(matches!(
            v("s:int", "x"),
            Err(VsphereError::Malformed { .. })
        ));
        assert!(matches!(
            v("s:boolean", "yes"),
            Err(VsphereError::Malformed { .. })
        ));
        assert!(matches!(
            v("s:int", "99999999999"),
            Err(VsphereError::Malformed { .. })
        ));
        assert_eq!(
            v("VirtualMachinePowerState", "poweredOn").unwrap(),
            Value::Enum {
                type_name: "VirtualMachinePowerState".into(),
                value: "poweredOn".into()
            }
        );
        // An `xsi:type` under a prefix bound to another namespace is not a type.
        let other = value(r#"<val xmlns:q="urn:other" q:type="s:int">7</val>"#).unwrap();
        assert_eq!(other, Value::String("7".into()));
    }

    #[test]
    fn arrays_infer_item_types() {
        let strings = value(&format!(
            r#"<val {NS} q:type="ArrayOfString"><string>10.0.0.1</string><string>fe80::1</string></val>"#
        ))
        .unwrap();
        assert_eq!(strings.as_array().unwrap()[1].as_str(), Some("fe80::1"));
        let refs = value(&format!(
            r#"<val {NS} q:type="ArrayOfManagedObjectReference"><ManagedObjectReference type="Datastore">datastore-1</ManagedObjectReference></val>"#
        ))
        .unwrap();
        assert_eq!(
            refs.as_array().unwrap()[0].as_moref(),
            Some(&MoRef::new("Datastore", "datastore-1"))
        );
        let ints = value(&format!(
            r#"<val {NS} q:type="ArrayOfInt"><int>1</int><int>x</int></val>"#
        ));
        assert!(ints.is_err());
        let nics = value(&format!(
            r#"<val {NS} q:type="ArrayOfGuestNicInfo"><GuestNicInfo><network>VM Network</network><ipAddress>10.0.0.5</ipAddress><ipAddress>fe80::5</ipAddress></GuestNicInfo></val>"#
        ))
        .unwrap();
        let nic = nics.as_array().unwrap()[0].as_object().unwrap();
        assert_eq!(nic.type_name, "GuestNicInfo");
        let ips: Vec<_> = nic
            .fields_named("ipAddress")
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(ips, ["10.0.0.5", "fe80::5"]);
        let empty = value(&format!(r#"<val {NS} q:type="ArrayOfString"/>"#)).unwrap();
        assert_eq!(empty, Value::Array(vec![]));
    }

    #[test]
    fn data_objects_keep_nested_types_and_references() {
        let v = value(&format!(
            r#"<val {NS} q:type="VirtualMachineSnapshotInfo"><currentSnapshot type="VirtualMachineSnapshot">snapshot-43</currentSnapshot><rootSnapshotList><name>a</name><id>1</id></rootSnapshotList><extra q:type="s:int">bad</extra></val>"#
        ))
        .unwrap();
        assert_eq!(v.type_name(), Some("VirtualMachineSnapshotInfo"));
        assert_eq!(
            v.field("currentSnapshot").and_then(Value::as_moref),
            Some(&MoRef::new("VirtualMachineSnapshot", "snapshot-43"))
        );
        assert_eq!(
            v.path("rootSnapshotList.id").and_then(Value::as_i64),
            Some(1)
        );
        // A bad typed field inside an object stays text instead of failing the whole value.
        assert_eq!(v.field("extra"), Some(&Value::String("bad".into())));
        assert_eq!(v.path("rootSnapshotList.nope"), None);
        let moref = value(&format!(
            r#"<val {NS} q:type="ManagedObjectReference" type="VirtualMachine">vm-46</val>"#
        ))
        .unwrap();
        assert_eq!(
            moref.as_moref(),
            Some(&MoRef::new("VirtualMachine", "vm-46"))
        );
        let bad = value(&format!(
            r#"<val {NS} q:type="ManagedObjectReference">vm-46</val>"#
        ));
        assert!(bad.is_err());
    }
}
