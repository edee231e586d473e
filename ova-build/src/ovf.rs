//! The OVF descriptor: filling `image/ferry.ovf.in`, and reading back what an OVA references.

use anyhow::{bail, Context, Result};
use quick_xml::events::Event;

/// Replaces every `{{KEY}}` with its XML-escaped value. A field without a value, or a value for
/// no field, is an error: either means the template and the tool disagree.
pub fn fill(template: &str, values: &[(&str, String)]) -> Result<String> {
    let mut out = String::with_capacity(template.len() + 4096);
    let mut used = vec![false; values.len()];
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .context("the OVF template has an unclosed {{")?;
        let key = &after[..end];
        let Some(index) = values.iter().position(|(k, _)| *k == key) else {
            bail!("the OVF template asks for {{{{{key}}}}}, which ova-build does not know");
        };
        used[index] = true;
        out.push_str(&escape(&values[index].1));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    if let Some(index) = used.iter().position(|u| !u) {
        bail!("the OVF template has no {{{{{}}}}} field", values[index].0);
    }
    Ok(out)
}

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// One `<File>` of `<References>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    pub href: String,
    pub size: Option<u64>,
}

/// The files an OVF references, in order. Refuses a name that could leave the OVA's folder.
pub fn references(ovf: &[u8]) -> Result<Vec<FileRef>> {
    let mut reader = quick_xml::Reader::from_reader(ovf);
    let mut buf = Vec::new();
    let mut files = Vec::new();
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Eof) => break,
            Ok(Event::Start(e) | Event::Empty(e)) if e.local_name().as_ref() == b"File" => {
                let mut href = None;
                let mut size = None;
                for attr in e.attributes() {
                    let attr = attr.context("a malformed attribute in <File>")?;
                    let value = attr
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .context("a malformed attribute value in <File>")?
                        .into_owned();
                    match attr.key.local_name().as_ref() {
                        b"href" => href = Some(value),
                        b"size" => {
                            size = Some(value.parse().with_context(|| {
                                format!("<File> size {value:?} is not a number")
                            })?)
                        }
                        _ => {}
                    }
                }
                let href = href.context("a <File> without ovf:href")?;
                if href.is_empty()
                    || href.contains('/')
                    || href.contains('\\')
                    || href.starts_with('.')
                {
                    bail!("<File> href {href:?} is not a plain file name");
                }
                files.push(FileRef { href, size });
            }
            Ok(_) => {}
            Err(err) => bail!(
                "the OVF is not well-formed XML at byte {}: {err}",
                reader.buffer_position()
            ),
        }
        buf.clear();
    }
    if files.is_empty() {
        bail!("the OVF references no file");
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_filled_and_escaped() {
        let got = fill(
            "<a v=\"{{A}}\">{{B}}</a>",
            &[("A", "1".into()), ("B", "x & <y> \"z\"".into())],
        )
        .unwrap();
        assert_eq!(got, "<a v=\"1\">x &amp; &lt;y&gt; &quot;z&quot;</a>");
    }

    #[test]
    fn template_and_values_must_agree() {
        let err = fill("{{A}} {{C}}", &[("A", "1".into())]).unwrap_err();
        assert!(err.to_string().contains("{{C}}"), "{err}");
        let err = fill("{{A}}", &[("A", "1".into()), ("B", "2".into())]).unwrap_err();
        assert!(err.to_string().contains("{{B}}"), "{err}");
        assert!(fill("{{A", &[]).is_err());
    }

    #[test]
    fn the_projects_template_fills_and_lists_both_disks() {
        let template = include_str!("../../image/ferry.ovf.in");
        let filled = fill(
            template,
            &[
                ("SYSTEM_VMDK", "s.vmdk".into()),
                ("SYSTEM_VMDK_SIZE", "10".into()),
                ("SYSTEM_CAPACITY", "4294967296".into()),
                ("DATA_VMDK", "d.vmdk".into()),
                ("DATA_VMDK_SIZE", "20".into()),
                ("DATA_CAPACITY", "68719476736".into()),
                ("VERSION", "0.1.0".into()),
                ("EULA", "Licensed <Apache-2.0> & more".into()),
            ],
        )
        .unwrap();
        let refs = references(filled.as_bytes()).unwrap();
        assert_eq!(
            refs,
            [
                FileRef {
                    href: "s.vmdk".into(),
                    size: Some(10)
                },
                FileRef {
                    href: "d.vmdk".into(),
                    size: Some(20)
                }
            ]
        );
        for key in [
            "ferry.hostname",
            "ferry.ip",
            "ferry.gateway",
            "ferry.dns",
            "ferry.ntp",
        ] {
            assert!(filled.contains(&format!("ovf:key=\"{key}\"")), "{key}");
        }
        assert!(filled.contains(
            "ovf:key=\"ferry.admin_password\" ovf:type=\"string\" ovf:password=\"true\""
        ));
        assert!(filled.contains("Licensed &lt;Apache-2.0&gt; &amp; more"));
        assert!(filled.contains("<rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType>"));
        assert!(filled.contains("<rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>"));
        assert!(filled.contains("<rasd:VirtualQuantity>8192</rasd:VirtualQuantity>"));
    }

    #[test]
    fn bad_references_are_refused() {
        for (ovf, why) in [
            ("<Envelope><References/></Envelope>", "no file"),
            (
                "<Envelope><File ovf:href=\"../x\"/></Envelope>",
                "plain file name",
            ),
            (
                "<Envelope><File ovf:href=\"/etc/passwd\"/></Envelope>",
                "plain file name",
            ),
            (
                "<Envelope><File ovf:size=\"1\"/></Envelope>",
                "without ovf:href",
            ),
            (
                "<Envelope><File ovf:href=\"a\" ovf:size=\"x\"/></Envelope>",
                "not a number",
            ),
            ("<Envelope><File ovf:href=\"a\"></Envelope>", "well-formed"),
        ] {
            let err = references(ovf.as_bytes()).unwrap_err();
            assert!(format!("{err:#}").contains(why), "{ovf}: {err:#}");
        }
    }
}
