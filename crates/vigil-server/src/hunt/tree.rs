//! Process trees from the index: a process's records are found by its GUID
//! (its start, exit, and every event it acted in), its children by their
//! parent GUID, its ancestors by following parent GUIDs up.

use super::acting_process;
use super::index::Term;
use prost::Message;
use vigil_proto::v1::{ProcessTree, Record, TreeProcess, record::Payload};
use vigil_store::{Scan, StoreError, TenantData};

pub(crate) const DEFAULT_EVENTS: u32 = 200;
pub(crate) const MAX_EVENTS: u32 = 5000;
/// Ancestors followed at most (a loop of parent GUIDs cannot hold a call).
const MAX_DEPTH: usize = 64;
/// Children listed at most, and how many of them come with their exits and
/// events (a lookup each); the rest carry their starts.
const MAX_CHILDREN: usize = 1000;
const DETAILED_CHILDREN: usize = 64;

/// Every record a GUID names, sorted into one process.
fn process(
    store: &dyn TenantData,
    guid: &str,
    max_events: usize,
) -> Result<Option<(String, TreeProcess)>, StoreError> {
    let material = Term::Guid.material(guid);
    let mut device = None;
    let mut p = TreeProcess {
        guid: guid.to_owned(),
        ..Default::default()
    };
    store.scan(
        &Scan {
            term: Some(&material),
            ..Scan::default()
        },
        &mut |dev, _, bytes| {
            let Ok(r) = Record::decode(bytes) else {
                return true;
            };
            let Some(payload) = &r.payload else {
                return true;
            };
            let mine = match payload {
                Payload::ProcessStart(s) => s.guid == guid,
                Payload::ProcessExit(e) => e.guid == guid,
                other => acting_process(other).is_some_and(|a| a.guid == guid),
            };
            if !mine {
                return true;
            }
            device.get_or_insert_with(|| dev.to_owned());
            match payload {
                Payload::ProcessStart(_) => p.start = Some(r),
                Payload::ProcessExit(_) => p.exit = Some(r),
                _ if p.events.len() < max_events => p.events.push(r),
                _ => p.events_truncated = true,
            }
            true
        },
    )?;
    Ok(device.map(|d| (d, p)))
}

fn parent_of(p: &TreeProcess) -> Option<&str> {
    match p.start.as_ref()?.payload.as_ref()? {
        Payload::ProcessStart(s) if !s.parent_guid.is_empty() => Some(&s.parent_guid),
        _ => None,
    }
}

/// The tree around `guid`, or `None` when no record names it.
pub(crate) fn process_tree(
    store: &dyn TenantData,
    guid: &str,
    max_events: u32,
) -> Result<Option<ProcessTree>, StoreError> {
    let max = match max_events {
        0 => DEFAULT_EVENTS,
        n => n.min(MAX_EVENTS),
    } as usize;
    let Some((device, me)) = process(store, guid, max)? else {
        return Ok(None);
    };
    let mut ancestors = Vec::new();
    let mut next = parent_of(&me).map(str::to_owned);
    let mut seen = vec![guid.to_owned()];
    while let Some(g) = next.take() {
        if ancestors.len() >= MAX_DEPTH || seen.contains(&g) {
            break;
        }
        seen.push(g.clone());
        let anc = match process(store, &g, max)? {
            Some((_, a)) => a,
            // Known only as a parent: named, without records.
            None => TreeProcess {
                guid: g.clone(),
                ..Default::default()
            },
        };
        next = parent_of(&anc).map(str::to_owned);
        ancestors.push(anc);
    }
    let material = Term::Parent.material(guid);
    let mut starts: Vec<Record> = Vec::new();
    let mut truncated = false;
    store.scan(
        &Scan {
            term: Some(&material),
            device: Some(&device),
            ..Scan::default()
        },
        &mut |_, _, bytes| {
            let Ok(r) = Record::decode(bytes) else {
                return true;
            };
            if let Some(Payload::ProcessStart(s)) = &r.payload
                && s.parent_guid == guid
            {
                if starts.len() >= MAX_CHILDREN {
                    truncated = true;
                    return false;
                }
                starts.push(r);
            }
            true
        },
    )?;
    starts.sort_by_key(|r| r.time_unix_ns);
    let mut children = Vec::with_capacity(starts.len());
    for (i, r) in starts.into_iter().enumerate() {
        let Some(Payload::ProcessStart(s)) = &r.payload else {
            continue;
        };
        let detailed = if i < DETAILED_CHILDREN {
            process(store, &s.guid, max)?.map(|(_, c)| c)
        } else {
            None
        };
        children.push(detailed.unwrap_or_else(|| TreeProcess {
            guid: s.guid.clone(),
            start: Some(r.clone()),
            ..Default::default()
        }));
    }
    Ok(Some(ProcessTree {
        device_id: device,
        hostname: String::new(),
        process: Some(me),
        ancestors,
        children,
        children_truncated: truncated,
    }))
}
