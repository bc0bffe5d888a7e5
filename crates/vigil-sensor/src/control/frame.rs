//! The control socket's wire format (see the module above): one JSON request
//! line in, length-prefixed frames out. Everything read is bounded and
//! checked; nothing a peer sends can make either side allocate more than
//! [`MAX_FRAME`] bytes or panic.

use super::{MAX_FRAME, MAX_REQUEST, Status};
use serde::{Deserialize, Serialize};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt,
};

const RECORD: u8 = 1;
const NOTICE: u8 = 2;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The records held in the spool, oldest first; with `follow`, then every
    /// record as it is appended.
    Inspect {
        #[serde(default)]
        follow: bool,
    },
    /// The sensor's state. (A struct variant, so that unknown fields are refused.)
    Status {},
}

/// A message of the sensor's other than a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Notice {
    /// Every record the spool held was sent (`records` of them); with
    /// `following`, records appended from now on follow.
    Listed { records: u64, following: bool },
    /// This follower fell behind by more than the sensor keeps for it and
    /// is cut off: `missed` records were not sent to it.
    Lagged { missed: u64 },
    /// A record too large for a frame, not sent.
    Skipped {
        sequence: u64,
        bytes: u64,
        why: String,
    },
    /// The sensor is stopping: nothing follows.
    End { reason: String },
    /// The request was refused or failed.
    Error { message: String },
    /// The answer to `status`.
    Status(Box<Status>),
}

/// One frame from the sensor.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A record as spooled: its sequence number and its exact bytes.
    Record {
        sequence: u64,
        bytes: Vec<u8>,
    },
    Notice(Notice),
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("a frame of {0} bytes: more than the limit of {MAX_FRAME}")]
    TooLarge(u64),
    #[error("an empty frame")]
    Empty,
    #[error("a frame of unknown type {0}")]
    UnknownType(u8),
    #[error("a record frame of {0} bytes is too short for its sequence number")]
    ShortRecord(usize),
    #[error("a notice that is not valid JSON: {0}")]
    BadNotice(String),
    #[error("a request longer than {MAX_REQUEST} bytes")]
    RequestTooLong,
    #[error("the connection closed before a request")]
    NoRequest,
    #[error("not a request: {0}")]
    BadRequest(String),
}

impl Frame {
    /// The frame's bytes: length, type, body. `None` when it would be larger
    /// than [`MAX_FRAME`].
    pub fn encode(&self) -> Option<Vec<u8>> {
        let (kind, body_len) = match self {
            Frame::Record { bytes, .. } => (RECORD, 8 + bytes.len()),
            Frame::Notice(_) => (NOTICE, 0),
        };
        let json = match self {
            Frame::Notice(n) => serde_json::to_vec(n).ok()?,
            Frame::Record { .. } => Vec::new(),
        };
        let len = 1 + body_len + json.len();
        if len > MAX_FRAME {
            return None;
        }
        let mut out = Vec::with_capacity(4 + len);
        out.extend_from_slice(&u32::try_from(len).ok()?.to_be_bytes());
        out.push(kind);
        if let Frame::Record { sequence, bytes } = self {
            out.extend_from_slice(&sequence.to_be_bytes());
            out.extend_from_slice(bytes);
        }
        out.extend_from_slice(&json);
        Some(out)
    }

    /// Reads one frame; `Ok(None)` at a clean end of the stream.
    pub async fn read(r: &mut (impl AsyncRead + Unpin)) -> Result<Option<Frame>, FrameError> {
        let mut len = [0u8; 4];
        let mut got = 0;
        while got < len.len() {
            match r.read(&mut len[got..]).await? {
                0 if got == 0 => return Ok(None),
                0 => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the connection closed inside a frame",
                    )
                    .into());
                }
                n => got += n,
            }
        }
        let len = u32::from_be_bytes(len);
        let Ok(size) = usize::try_from(len) else {
            return Err(FrameError::TooLarge(u64::from(len)));
        };
        if size > MAX_FRAME {
            return Err(FrameError::TooLarge(u64::from(len)));
        }
        if size == 0 {
            return Err(FrameError::Empty);
        }
        let mut body = vec![0u8; size];
        r.read_exact(&mut body).await?;
        Frame::decode(&body).map(Some)
    }

    /// A frame's type and body (what follows the length).
    pub fn decode(body: &[u8]) -> Result<Frame, FrameError> {
        let Some((&kind, rest)) = body.split_first() else {
            return Err(FrameError::Empty);
        };
        match kind {
            RECORD => {
                let Some((seq, bytes)) = rest.split_first_chunk::<8>() else {
                    return Err(FrameError::ShortRecord(body.len()));
                };
                Ok(Frame::Record {
                    sequence: u64::from_be_bytes(*seq),
                    bytes: bytes.to_vec(),
                })
            }
            NOTICE => serde_json::from_slice(rest)
                .map(Frame::Notice)
                .map_err(|e| FrameError::BadNotice(e.to_string())),
            other => Err(FrameError::UnknownType(other)),
        }
    }
}

/// Writes a frame; a record too large for one goes as a `skipped` notice.
pub(crate) async fn write(w: &mut (impl AsyncWrite + Unpin), frame: &Frame) -> std::io::Result<()> {
    let bytes = match (frame.encode(), frame) {
        (Some(b), _) => b,
        (None, Frame::Record { sequence, bytes }) => Frame::Notice(Notice::Skipped {
            sequence: *sequence,
            bytes: bytes.len() as u64,
            why: format!("larger than a control frame ({MAX_FRAME} bytes)"),
        })
        .encode()
        .unwrap_or_default(),
        (None, Frame::Notice(_)) => Frame::Notice(Notice::Error {
            message: "an answer too large for a control frame".into(),
        })
        .encode()
        .unwrap_or_default(),
    };
    w.write_all(&bytes).await?;
    w.flush().await
}

impl Request {
    /// The request as the line a client sends.
    pub fn line(&self) -> Vec<u8> {
        let mut l = serde_json::to_vec(self).unwrap_or_default();
        l.push(b'\n');
        l
    }

    /// Reads the request line: at most [`MAX_REQUEST`] bytes, newline included.
    pub async fn read(r: &mut (impl AsyncBufRead + Unpin)) -> Result<Request, FrameError> {
        let mut line = Vec::new();
        let mut limited = r.take(MAX_REQUEST as u64);
        limited.read_until(b'\n', &mut line).await?;
        if line.last() != Some(&b'\n') {
            return Err(if line.len() >= MAX_REQUEST {
                FrameError::RequestTooLong
            } else {
                FrameError::NoRequest
            });
        }
        serde_json::from_slice(&line).map_err(|e| FrameError::BadRequest(e.to_string()))
    }
}
