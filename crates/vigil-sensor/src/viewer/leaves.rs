//! "What leaves the machine", written from the schema compiled into the
//! sensor: every record kind with its data level, and every field of every
//! message a record can hold, with the comment `records.proto` gives it. The
//! top-level README carries this text between markers, and a test
//! (`tests/readme.rs`) fails when the two differ, so the README cannot drift
//! from what the sensor sends.

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet};
use std::collections::{BTreeMap, HashMap};
use vigil_proto::v1::Record;

const RECORDS: &str = "vigil/v1/records.proto";
const PACKAGE: &str = ".vigil.v1.";
/// What a sensor sends besides records, by file and message.
const REQUESTS: [(&str, &str, &str); 3] = [
    (
        "vigil/v1/ingest.proto",
        "EnrollRequest",
        "once, to enroll (`Ingest.Enroll`)",
    ),
    (
        "vigil/v1/ingest.proto",
        "WatchPolicyRequest",
        "when it asks for its tenant's privacy policy (`Ingest.WatchPolicy`)",
    ),
    (
        "vigil/v1/rules.proto",
        "RulesRunning",
        "when it asks for published rules, and after each change (`Rules.WatchRules`)",
    ),
];

/// A message or enum of the schema, with where its comments are.
struct Schema {
    files: Vec<FileDescriptorProto>,
    /// Full name (".vigil.v1.Path") → (file index, path of the definition).
    messages: HashMap<String, (usize, Vec<i32>)>,
    enums: HashMap<String, (usize, Vec<i32>)>,
    /// (file index, path) → comment.
    comments: HashMap<(usize, Vec<i32>), String>,
}

impl Schema {
    fn load() -> Result<Schema, String> {
        let set = FileDescriptorSet::decode(vigil_proto::FILE_DESCRIPTOR_SET)
            .map_err(|e| format!("the compiled-in descriptor: {e}"))?;
        let mut s = Schema {
            files: set.file,
            messages: HashMap::new(),
            enums: HashMap::new(),
            comments: HashMap::new(),
        };
        for (fi, f) in s.files.iter().enumerate() {
            let prefix = format!(".{}.", f.package());
            for (i, m) in f.message_type.iter().enumerate() {
                index(
                    &mut s.messages,
                    &mut s.enums,
                    fi,
                    &prefix,
                    m,
                    vec![4, i as i32],
                );
            }
            for (i, e) in f.enum_type.iter().enumerate() {
                s.enums
                    .insert(format!("{prefix}{}", e.name()), (fi, vec![5, i as i32]));
            }
            for l in f.source_code_info.iter().flat_map(|i| &i.location) {
                let text = [l.leading_comments(), l.trailing_comments()]
                    .iter()
                    .map(|c| c.split_whitespace().collect::<Vec<_>>().join(" "))
                    .filter(|c| !c.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                if !text.is_empty() {
                    s.comments.insert((fi, l.path.clone()), text);
                }
            }
        }
        if s.comments.is_empty() {
            return Err("the compiled-in descriptor carries no comments".into());
        }
        Ok(s)
    }

    fn comment(&self, file: usize, path: &[i32]) -> &str {
        self.comments
            .get(&(file, path.to_vec()))
            .map_or("", String::as_str)
    }

    fn message(&self, name: &str) -> Option<(usize, &[i32], &DescriptorProto)> {
        let (fi, path) = self.messages.get(name)?;
        let f = self.files.get(*fi)?;
        let mut m = f.message_type.get(usize::try_from(*path.get(1)?).ok()?)?;
        for pair in path[2..].chunks(2) {
            m = m.nested_type.get(usize::try_from(*pair.get(1)?).ok()?)?;
        }
        Some((*fi, path, m))
    }

    fn enumeration(&self, name: &str) -> Option<(usize, &[i32], &EnumDescriptorProto)> {
        let (fi, path) = self.enums.get(name)?;
        let f = self.files.get(*fi)?;
        let e = match path.as_slice() {
            [5, i] => f.enum_type.get(usize::try_from(*i).ok()?)?,
            _ => {
                let (_, _, m) = self.message_by_path(*fi, &path[..path.len() - 2])?;
                m.enum_type.get(usize::try_from(*path.last()?).ok()?)?
            }
        };
        Some((*fi, path, e))
    }

    fn message_by_path(
        &self,
        fi: usize,
        path: &[i32],
    ) -> Option<(usize, &[i32], &DescriptorProto)> {
        let name = self
            .messages
            .iter()
            .find(|(_, (f, p))| *f == fi && p == path)?
            .0;
        self.message(name)
    }

    /// A field's type as the proto spells it: `string`, `Path`,
    /// `repeated bytes`, `map<string, uint64>`.
    fn type_of(&self, f: &prost_types::FieldDescriptorProto) -> String {
        let base = match f.r#type() {
            Type::Message | Type::Enum | Type::Group => {
                if let Some((_, _, m)) = self.message(f.type_name())
                    && m.options.as_ref().is_some_and(|o| o.map_entry())
                {
                    let kv: Vec<String> = m.field.iter().map(|f| self.type_of(f)).collect();
                    return format!("map<{}>", kv.join(", "));
                }
                short(f.type_name()).to_owned()
            }
            t => scalar(t).to_owned(),
        };
        if f.label() == Label::Repeated {
            format!("repeated {base}")
        } else {
            base
        }
    }
}

fn index(
    messages: &mut HashMap<String, (usize, Vec<i32>)>,
    enums: &mut HashMap<String, (usize, Vec<i32>)>,
    fi: usize,
    prefix: &str,
    m: &DescriptorProto,
    path: Vec<i32>,
) {
    let name = format!("{prefix}{}", m.name());
    for (i, n) in m.nested_type.iter().enumerate() {
        let mut p = path.clone();
        p.extend([3, i as i32]);
        index(messages, enums, fi, &format!("{name}."), n, p);
    }
    for (i, e) in m.enum_type.iter().enumerate() {
        let mut p = path.clone();
        p.extend([4, i as i32]);
        enums.insert(format!("{name}.{}", e.name()), (fi, p));
    }
    messages.insert(name, (fi, path));
}

fn short(full: &str) -> &str {
    full.strip_prefix(PACKAGE).unwrap_or(full)
}

fn scalar(t: Type) -> &'static str {
    match t {
        Type::Double => "double",
        Type::Float => "float",
        Type::Int64 => "int64",
        Type::Uint64 => "uint64",
        Type::Int32 => "int32",
        Type::Fixed64 => "fixed64",
        Type::Fixed32 => "fixed32",
        Type::Bool => "bool",
        Type::String => "string",
        Type::Bytes => "bytes",
        Type::Uint32 => "uint32",
        Type::Sfixed32 => "sfixed32",
        Type::Sfixed64 => "sfixed64",
        Type::Sint32 => "sint32",
        Type::Sint64 => "sint64",
        Type::Message | Type::Enum | Type::Group => "message",
    }
}

/// Text for a table cell: one line, pipes escaped.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The data level of a record kind: what the sensor itself decides, asked
/// with an empty record of that kind.
fn level_of_kind(field_number: i32) -> &'static str {
    let Ok(tag) = u32::try_from(field_number) else {
        return "unknown";
    };
    let mut bytes = Vec::new();
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, &mut bytes);
    bytes.push(0);
    match Record::decode(bytes.as_slice())
        .ok()
        .and_then(|r| r.payload)
    {
        Some(p) => match crate::privacy::level_of(&p) {
            vigil_proto::v1::DataLevel::Optional => "optional",
            _ => "required",
        },
        None => "unknown",
    }
}

/// Messages and enums a message's fields name, depth first, in field order.
fn reach(
    s: &Schema,
    name: &str,
    seen: &mut Vec<String>,
    enums: &mut Vec<String>,
    skip: &dyn Fn(&str) -> bool,
) {
    let Some((_, _, m)) = s.message(name) else {
        return;
    };
    for f in &m.field {
        let t = f.type_name();
        match f.r#type() {
            Type::Enum if !enums.iter().any(|e| e == t) => enums.push(t.to_owned()),
            Type::Message if !skip(t) => {
                let entry = s
                    .message(t)
                    .is_some_and(|(_, _, m)| m.options.as_ref().is_some_and(|o| o.map_entry()));
                if entry {
                    reach(s, t, seen, enums, skip);
                } else if !seen.iter().any(|n| n == t) {
                    seen.push(t.to_owned());
                    reach(s, t, seen, enums, skip);
                }
            }
            _ => {}
        }
    }
}

/// A message's fields as a table; `except` leaves out oneof members.
fn table(s: &Schema, name: &str, out: &mut String, skip_oneof: bool) {
    let Some((fi, path, m)) = s.message(name) else {
        return;
    };
    out.push_str("| Field | Type | What it is |\n|---|---|---|\n");
    for (j, f) in m.field.iter().enumerate() {
        if skip_oneof && f.oneof_index.is_some() {
            continue;
        }
        let mut p = path.to_vec();
        p.extend([2, j as i32]);
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            f.name(),
            cell(&s.type_of(f)),
            cell(s.comment(fi, &p))
        ));
    }
    out.push('\n');
}

fn heading_and_comment(s: &Schema, name: &str, heading: &str, out: &mut String) {
    out.push_str(heading);
    out.push_str("\n\n");
    if let Some((fi, path, _)) = s.message(name) {
        let c = s.comment(fi, path);
        if !c.is_empty() {
            out.push_str(c);
            out.push_str("\n\n");
        }
    }
}

/// The generated part of README's "What leaves the machine" (Markdown).
pub fn what_leaves_the_machine() -> Result<String, String> {
    let s = Schema::load()?;
    let record = format!("{PACKAGE}Record");
    let (fi, rpath, rmsg) = s
        .message(&record)
        .ok_or("no vigil.v1.Record in the schema")?;
    if s.files.get(fi).map(|f| f.name()) != Some(RECORDS) {
        return Err(format!("vigil.v1.Record is not in {RECORDS}"));
    }
    let kinds: Vec<&prost_types::FieldDescriptorProto> = rmsg
        .field
        .iter()
        .filter(|f| f.oneof_index.is_some())
        .collect();
    let mut out = String::new();
    out.push_str(&format!(
        "`Record`: {} Its payload is one of these kinds:\n\n",
        s.comment(fi, rpath)
    ));
    out.push_str("| Kind | Message | Level |\n|---|---|---|\n");
    for k in &kinds {
        out.push_str(&format!(
            "| `{}` | `{}` | {} |\n",
            k.name(),
            short(k.type_name()),
            level_of_kind(k.number())
        ));
    }
    out.push_str("\nEvery record carries:\n\n");
    table(&s, &record, &mut out, true);

    let payloads: Vec<String> = kinds.iter().map(|k| k.type_name().to_owned()).collect();
    let is_payload = |t: &str| t == record || payloads.iter().any(|p| p == t);
    let (mut nested, mut enums) = (Vec::new(), Vec::new());
    reach(&s, &record, &mut nested, &mut enums, &is_payload);
    for k in &kinds {
        let name = k.type_name();
        heading_and_comment(
            &s,
            name,
            &format!(
                "### `{}` ({}, {})",
                k.name(),
                short(name),
                level_of_kind(k.number())
            ),
            &mut out,
        );
        table(&s, name, &mut out, false);
        reach(&s, name, &mut nested, &mut enums, &is_payload);
    }
    out.push_str("### Inside records\n\n");
    for name in &nested {
        heading_and_comment(&s, name, &format!("#### `{}`", short(name)), &mut out);
        table(&s, name, &mut out, false);
    }
    out.push_str("Enumerations:\n\n");
    let mut described: BTreeMap<String, String> = BTreeMap::new();
    for name in &enums {
        let Some((fi, path, e)) = s.enumeration(name) else {
            continue;
        };
        let values: Vec<(String, &str)> = e
            .value
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let mut p = path.to_vec();
                p.extend([2, i as i32]);
                (format!("`{}`", v.name()), s.comment(fi, &p))
            })
            .collect();
        let c = s.comment(fi, path);
        let mut text = format!("- `{}`:", short(name));
        if !c.is_empty() {
            text.push(' ');
            text.push_str(c);
        }
        if values.iter().all(|(_, c)| c.is_empty()) {
            let names: Vec<&str> = values.iter().map(|(n, _)| n.as_str()).collect();
            text.push_str(&format!(" {}\n", names.join(", ")));
        } else {
            text.push('\n');
            for (n, c) in &values {
                if c.is_empty() {
                    text.push_str(&format!("  - {n}\n"));
                } else {
                    text.push_str(&format!("  - {n}: {c}\n"));
                }
            }
        }
        described.insert(short(name).to_owned(), text);
    }
    for line in described.values() {
        out.push_str(line);
    }
    out.push_str("\n### Besides records\n\n");
    for (file, msg, when) in REQUESTS {
        let name = format!("{PACKAGE}{msg}");
        if s.message(&name)
            .is_none_or(|(fi, _, _)| s.files.get(fi).map(|f| f.name()) != Some(file))
        {
            return Err(format!("no {msg} in {file}"));
        }
        heading_and_comment(&s, &name, &format!("#### `{msg}`, {when}"), &mut out);
        table(&s, &name, &mut out, false);
    }
    Ok(out.trim_end().to_owned() + "\n")
}
