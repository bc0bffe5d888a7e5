//! What the owner of a device can see of what leaves it (seed 000's
//! viewer): `vigil-sensor inspect` shows the records exactly as spooled,
//! hence as sent, and `vigil-sensor status` the sensor's state.
//!
//! Both ask the running sensor over its control socket ([`crate::control`]).
//! When no sensor answers, `inspect` reads the spool file itself, read only
//! (it cannot change or remove anything), and `status` says the sensor is
//! not running and shows what the data directory tells.

mod leaves;
mod render;

pub use leaves::what_leaves_the_machine;
pub use render::{human, json, rfc3339};

use crate::control::{Client, ClientError, Frame, Notice, Request, SpoolStatus, Status};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Exit code of `status` (and of nothing else) when no sensor runs.
pub const NOT_RUNNING: i32 = 3;

/// The spool's file name in the data directory.
const SPOOL_FILE: &str = "spool.redb";

#[derive(Debug, thiserror::Error)]
pub enum ViewerError {
    #[error("{0}")]
    Control(#[from] ClientError),
    /// The sensor turned the request down, saying why.
    #[error("the sensor says: {0}")]
    Refused(String),
    #[error(
        "this follower fell behind and the sensor cut it off: {0} records were not shown (the sensor never waits for a reader); run inspect --follow again"
    )]
    Lagged(u64),
    #[error("the sensor answered something else than asked: {0}")]
    Unexpected(String),
    #[error("no spool at {0}: no connected sensor ever ran with this data directory")]
    NoSpool(String),
    #[error("spool {path}: {error}")]
    Spool {
        path: String,
        error: vigil_spool::SpoolError,
    },
    #[error("writing the output: {0}")]
    Output(std::io::Error),
}

/// What `inspect` is asked.
#[derive(Debug, Clone)]
pub struct InspectOptions {
    pub data_dir: PathBuf,
    pub follow: bool,
    pub json: bool,
}

/// Writes one record in the form asked; a closed output (`| head`) ends quietly.
fn emit(out: &mut dyn Write, json: bool, sequence: u64, bytes: &[u8]) -> std::io::Result<()> {
    if json {
        let mut line = render::json(sequence, bytes).to_string();
        line.push('\n');
        out.write_all(line.as_bytes())
    } else {
        out.write_all(render::human(sequence, bytes).as_bytes())
    }
}

fn output(e: std::io::Error) -> Result<(), ViewerError> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(ViewerError::Output(e))
    }
}

/// `vigil-sensor inspect`: every record the spool holds, oldest first, then
/// (with `follow`) every record as the sensor appends it, until the sensor
/// stops. Records go to `out`; what is said about them (how many, where
/// they come from, why it stopped) to `note`. Returns the exit code.
pub async fn inspect<O: Write, N: Write>(
    o: &InspectOptions,
    out: &mut O,
    note: &mut N,
) -> Result<i32, ViewerError> {
    let mut client = match Client::request(&o.data_dir, &Request::Inspect { follow: o.follow })
        .await
    {
        Ok(c) => c,
        Err(ClientError::NotRunning(socket)) => {
            let _ = writeln!(
                note,
                "The sensor is not running (nothing answers at {socket}): reading its spool directly, read only."
            );
            return inspect_stopped(o, out, note);
        }
        Err(ClientError::Refused(m)) => return Err(ViewerError::Refused(m)),
        Err(e) => return Err(e.into()),
    };
    loop {
        let frame = client.next().await?;
        match frame {
            Some(Frame::Record { sequence, bytes }) => {
                let r = emit(out, o.json, sequence, &bytes)
                    .and_then(|()| if o.follow { out.flush() } else { Ok(()) });
                if let Err(e) = r {
                    return output(e).map(|()| 0);
                }
            }
            Some(Frame::Notice(Notice::Listed { records, following })) => {
                if let Err(e) = out.flush() {
                    return output(e).map(|()| 0);
                }
                let _ = writeln!(note, "{records} records held in the spool, shown above.");
                if following {
                    let _ = writeln!(
                        note,
                        "Following records as the sensor spools them (Ctrl-C stops)."
                    );
                } else {
                    return Ok(0);
                }
            }
            Some(Frame::Notice(Notice::Skipped {
                sequence,
                bytes,
                why,
            })) => {
                let _ = writeln!(note, "Record {sequence} ({bytes} bytes) not shown: {why}.");
            }
            Some(Frame::Notice(Notice::Lagged { missed })) => {
                let _ = out.flush();
                return Err(ViewerError::Lagged(missed));
            }
            Some(Frame::Notice(Notice::End { reason })) => {
                let _ = out.flush();
                let _ = writeln!(note, "Stopped following: {reason}.");
                return Ok(0);
            }
            Some(Frame::Notice(Notice::Error { message })) => {
                return Err(ViewerError::Refused(message));
            }
            Some(Frame::Notice(other)) => {
                return Err(ViewerError::Unexpected(format!("{other:?}")));
            }
            None => {
                let _ = out.flush();
                let _ = writeln!(note, "The sensor closed the connection.");
                return Ok(0);
            }
        }
    }
}

fn open_spool(data_dir: &Path) -> Result<vigil_spool::SpoolView, ViewerError> {
    let path = data_dir.join(SPOOL_FILE);
    if !path.exists() {
        return Err(ViewerError::NoSpool(path.display().to_string()));
    }
    vigil_spool::SpoolView::open(&path).map_err(|error| ViewerError::Spool {
        path: path.display().to_string(),
        error,
    })
}

/// A stopped sensor's spool, listed from the file, which is left as it was.
fn inspect_stopped(
    o: &InspectOptions,
    out: &mut dyn Write,
    note: &mut dyn Write,
) -> Result<i32, ViewerError> {
    let view = open_spool(&o.data_dir)?;
    let spool_err = |error| ViewerError::Spool {
        path: o.data_dir.join(SPOOL_FILE).display().to_string(),
        error,
    };
    let (mut after, mut shown) = (0, 0u64);
    loop {
        let page = view
            .read_after(after, 256, 1024 * 1024)
            .map_err(spool_err)?;
        if page.is_empty() {
            break;
        }
        for (sequence, bytes) in page {
            if let Err(e) = emit(out, o.json, sequence, &bytes) {
                return output(e).map(|()| 0);
            }
            after = sequence;
            shown += 1;
        }
    }
    if let Err(e) = out.flush() {
        return output(e).map(|()| 0);
    }
    let _ = writeln!(note, "{shown} records held in the spool, shown above.");
    if o.follow {
        let _ = writeln!(note, "Nothing to follow: the sensor is not running.");
    }
    Ok(0)
}

/// What `status` is asked; `endpoint` comes from the configuration, if one was read.
#[derive(Debug, Clone)]
pub struct StatusOptions {
    pub data_dir: PathBuf,
    pub json: bool,
    pub endpoint: Option<String>,
}

/// `vigil-sensor status`: the running sensor's state; or, when none runs,
/// that it does not (exit code [`NOT_RUNNING`]) and what its data directory
/// tells: the device's identity and what the spool holds.
pub async fn status<W: Write>(o: &StatusOptions, out: &mut W) -> Result<i32, ViewerError> {
    let (status, code) = match Client::request(&o.data_dir, &Request::Status {}).await {
        Ok(mut client) => match client.next().await? {
            Some(Frame::Notice(Notice::Status(s))) => (*s, 0),
            Some(Frame::Notice(Notice::Error { message })) => {
                return Err(ViewerError::Refused(message));
            }
            other => return Err(ViewerError::Unexpected(format!("{other:?}"))),
        },
        Err(ClientError::NotRunning(socket)) => {
            if !o.json {
                let _ = writeln!(
                    out,
                    "The sensor is not running (nothing answers at {socket}). From its data directory:\n"
                );
            }
            (stopped(o), NOT_RUNNING)
        }
        Err(ClientError::Refused(m)) => return Err(ViewerError::Refused(m)),
        Err(e) => return Err(e.into()),
    };
    let text = if o.json {
        let mut s = serde_json::to_string_pretty(&status).unwrap_or_default();
        s.push('\n');
        s
    } else {
        status.human()
    };
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        output(e)?;
    }
    Ok(code)
}

/// What a stopped sensor's data directory tells.
fn stopped(o: &StatusOptions) -> Status {
    let connection =
        crate::uplink::DeviceIdentity::ids(&o.data_dir).map(|(device_id, tenant_id)| {
            crate::control::Connection {
                state: "not running".into(),
                endpoint: o.endpoint.clone().unwrap_or_default(),
                device_id,
                tenant_id,
                ..Default::default()
            }
        });
    let spool = open_spool(&o.data_dir)
        .ok()
        .and_then(|v| v.stats().ok())
        .map(|st| SpoolStatus {
            records: st.records,
            bytes: st.bytes,
            capacity_bytes: 0,
            evicted: st.dropped,
        });
    Status {
        running: false,
        data_dir: o.data_dir.display().to_string(),
        connection,
        spool,
        ..Default::default()
    }
}
