//! The client side of the control socket, for `inspect` and `status`.

use super::frame::{Frame, FrameError, Request};
use std::path::Path;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedReadHalf;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No sensor answers on the socket: none runs with this data directory.
    #[error("no sensor answers at {0}")]
    NotRunning(String),
    #[error("control socket {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("control socket: {0}")]
    Frame(#[from] FrameError),
    /// The sensor turned this client away (its user, or too many clients).
    #[error("the sensor {0}")]
    Refused(String),
}

/// A connection to a running sensor's control socket.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<OwnedReadHalf>,
    /// Kept open: closing it would end the request early.
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl Client {
    /// Connects to the sensor of `data_dir` and sends `request`.
    pub async fn request(data_dir: &Path, request: &Request) -> Result<Client, ClientError> {
        let path = super::socket_path(data_dir);
        let io = |error| ClientError::Io {
            path: path.display().to_string(),
            error,
        };
        let stream = match UnixStream::connect(&path).await {
            Ok(s) => s,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Err(ClientError::NotRunning(path.display().to_string()));
            }
            Err(e) => return Err(io(e)),
        };
        let (rd, wr) = stream.into_split();
        let mut client = Client {
            reader: BufReader::new(rd),
            writer: wr,
        };
        if let Err(e) = client.writer.write_all(&request.line()).await {
            // A sensor that turns a peer away says why, then closes.
            if let Ok(Some(Frame::Notice(super::Notice::Error { message }))) = client.next().await {
                return Err(ClientError::Refused(message));
            }
            return Err(io(e));
        }
        Ok(client)
    }

    /// The next frame; `None` when the sensor closed the connection.
    pub async fn next(&mut self) -> Result<Option<Frame>, ClientError> {
        Ok(Frame::read(&mut self.reader).await?)
    }
}
