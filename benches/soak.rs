//! Soak (issue 16, item 5): the real `vigil-server` and `vigil-sensor`
//! binaries under a steady load for SOAK_SECS (default 1800), sampled every
//! SAMPLE_SECS (default 30) from outside through /proc/PID: resident memory
//! (VmRSS) and open file handles of each, with what the server stored.
//!
//! The load: a process execs `/bin/true <marker>` LOAD_EXECS times a second
//! (default 100), creates and removes LOAD_FILES files a second (default 500)
//! in a scratch directory, opens a TCP connection to a local listener
//! LOAD_CONNECTS times a second (default 20), and reads /etc/shadow every 10 s
//! (a rule of the pack raises an alert each time). An analyst meanwhile asks,
//! once a second in turn: ListAlerts, SearchEvents over the last minute,
//! ListDevices, GetAlert of the newest alert.
//!
//! Flat means: over the second half of the run (the first half warms caches,
//! the process table and the store's pages), RSS grows by less than 10% and
//! the handle count by at most 8 from its lowest to its highest sample — and
//! the least-squares slope is printed per hour for both. Exit status 1 when
//! either side is not flat.
//!
//! `sudo cargo bench --bench soak` (root: the kernel sensor). Binaries:
//! VIGIL_SERVER_BIN / VIGIL_SENSOR_BIN, else built in release beside this bench.

use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use vigil_proto::v1::{
    GetAlertRequest, ListAlertsRequest, ListHuntDevicesRequest, SearchEventsRequest,
    alerts_client::AlertsClient, hunt_client::HuntClient,
};

mod support;
use support::server::{ServerProcess, server_bin};
use support::{env_or, load_average, with_token};

/// VmRSS in KiB and the number of open descriptors of a process.
fn sample(pid: u32) -> Result<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    Ok((rss, fds))
}

/// Slope of `ys` over `xs` (least squares).
fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let cov: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let var: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    if var == 0.0 { 0.0 } else { cov / var }
}

/// The steady load, in threads, until `stop`; counts what it did.
fn load(
    stop: Arc<AtomicBool>,
    done: Arc<[AtomicU64; 4]>,
) -> Result<Vec<std::thread::JoinHandle<()>>> {
    let execs: u64 = env_or("LOAD_EXECS", 100);
    let files: u64 = env_or("LOAD_FILES", 500);
    let connects: u64 = env_or("LOAD_CONNECTS", 20);
    let scratch = Arc::new(tempfile::tempdir()?);
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let mut threads = Vec::new();
    {
        let stop = Arc::clone(&stop);
        threads.push(std::thread::spawn(move || {
            listener.set_nonblocking(true).ok();
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }));
    }
    // Each job paced to its rate, in ticks of 100 ms.
    let paced = move |rate: u64, mut job: Box<dyn FnMut(u64) + Send>, stop: Arc<AtomicBool>| {
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                while n < due {
                    job(n);
                    n += 1;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let d = Arc::clone(&done);
    threads.push(paced(
        execs,
        Box::new(move |n| {
            if Command::new("/bin/true")
                .arg(format!("soak-{n}"))
                .status()
                .is_ok()
            {
                d[0].fetch_add(1, Ordering::Relaxed);
            }
        }),
        Arc::clone(&stop),
    ));
    let d = Arc::clone(&done);
    let dir = Arc::clone(&scratch);
    threads.push(paced(
        files,
        Box::new(move |n| {
            let p = dir.path().join(format!("f{}", n % 1000));
            if std::fs::write(&p, n.to_le_bytes()).is_ok() && std::fs::remove_file(&p).is_ok() {
                d[1].fetch_add(1, Ordering::Relaxed);
            }
        }),
        Arc::clone(&stop),
    ));
    let d = Arc::clone(&done);
    threads.push(paced(
        connects,
        Box::new(move |_| {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                d[2].fetch_add(1, Ordering::Relaxed);
            }
        }),
        Arc::clone(&stop),
    ));
    let d = Arc::clone(&done);
    threads.push(paced(
        1,
        Box::new(move |n| {
            if n.is_multiple_of(10)
                && Command::new("cat")
                    .arg("/etc/shadow")
                    .stdout(Stdio::null())
                    .status()
                    .is_ok()
            {
                d[3].fetch_add(1, Ordering::Relaxed);
            }
        }),
        stop,
    ));
    // The scratch directory lives as long as the threads that use it.
    std::mem::forget(scratch);
    Ok(threads)
}

struct Series {
    t: Vec<f64>,
    rss: Vec<f64>,
    fds: Vec<f64>,
}

impl Series {
    /// Over the second half: (rss growth %, fd range, rss MiB/h, fds/h).
    fn verdict(&self) -> (f64, f64, f64, f64) {
        let h = self.t.len() / 2;
        let (t, rss, fds) = (&self.t[h..], &self.rss[h..], &self.fds[h..]);
        let min = |v: &[f64]| v.iter().copied().fold(f64::MAX, f64::min);
        let max = |v: &[f64]| v.iter().copied().fold(f64::MIN, f64::max);
        let growth = (max(rss) - min(rss)) / min(rss).max(1.0) * 100.0;
        (
            growth,
            max(fds) - min(fds),
            slope(t, rss) * 3600.0 / 1024.0,
            slope(t, fds) * 3600.0,
        )
    }
}

fn sensor_config(dir: &Path, server: &ServerProcess, token: &str) -> Result<std::path::PathBuf> {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, server.ca_pem()?)?;
    let config = dir.join("sensor.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[server]\nendpoint = \"https://{}\"\nca_file = {ca:?}\nserver_name = \"localhost\"\n\
             [enrollment]\ntoken = {token:?}\n[rules]\npaths = [{rules:?}]\n",
            dir.join("data"),
            server.addr
        ),
    )?;
    Ok(config)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<()> {
    const NAME: &str = "soak";
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED {NAME}: needs root (the kernel sensor)");
        return Ok(());
    }
    let secs: u64 = env_or("SOAK_SECS", 1800);
    let every: u64 = env_or("SAMPLE_SECS", 30);
    let (Some(server_bin), Some(sensor_bin)) =
        (server_bin(NAME)?, support::sensor::sensor_bin(NAME)?)
    else {
        return Ok(());
    };
    let mut server = ServerProcess::configure(NAME, &server_bin)?;
    server.create_tenant("acme")?;
    let enroll = server.enrollment_token("acme")?;
    let analyst = server.api_token("acme", "analyst")?;
    server.start("warn")?;
    let scratch = support::disk_tempdir(NAME)?;
    let config = sensor_config(scratch.path(), &server, &enroll)?;
    let sensor_log = std::fs::File::create(scratch.path().join("sensor.log"))?;
    let mut sensor: Child = Command::new(&sensor_bin)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(sensor_log)
        .spawn()
        .context("starting vigil-sensor")?;
    let server_pid = server.pid().context("server pid")?;
    let sensor_pid = sensor.id();
    let ch = server.channel(None).await?;
    let (alerts, hunt) = (AlertsClient::new(ch.clone()), HuntClient::new(ch));
    // Enrolled and sending before the clock starts.
    let t = Instant::now();
    loop {
        let devices = hunt
            .clone()
            .list_devices(with_token(ListHuntDevicesRequest::default(), &analyst))
            .await?
            .into_inner();
        if !devices.devices.is_empty() {
            break;
        }
        if let Some(s) = sensor.try_wait()? {
            bail!("the sensor exited: {s}");
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("the sensor did not enroll within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    let threads = load(Arc::clone(&stop), Arc::clone(&done))?;
    let queries = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let analyst_task = {
        let (stop, queries, failed) =
            (Arc::clone(&stop), Arc::clone(&queries), Arc::clone(&failed));
        let analyst = analyst.clone();
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let ok = match i % 4 {
                    0 => alerts
                        .clone()
                        .list_alerts(with_token(
                            ListAlertsRequest {
                                page_size: 50,
                                ..Default::default()
                            },
                            &analyst,
                        ))
                        .await
                        .is_ok(),
                    1 => {
                        let now = vigil_store::now_unix_ns();
                        match hunt
                            .clone()
                            .search_events(with_token(
                                SearchEventsRequest {
                                    since_unix_ns: now - 60_000_000_000,
                                    until_unix_ns: now,
                                    limit: 500,
                                    ..Default::default()
                                },
                                &analyst,
                            ))
                            .await
                        {
                            Ok(s) => {
                                let mut s = s.into_inner();
                                let mut ok = true;
                                while let Some(p) = s.next().await {
                                    ok &= p.is_ok();
                                }
                                ok
                            }
                            Err(_) => false,
                        }
                    }
                    2 => hunt
                        .clone()
                        .list_devices(with_token(ListHuntDevicesRequest::default(), &analyst))
                        .await
                        .is_ok(),
                    _ => {
                        let newest = alerts
                            .clone()
                            .list_alerts(with_token(
                                ListAlertsRequest {
                                    page_size: 1,
                                    ..Default::default()
                                },
                                &analyst,
                            ))
                            .await;
                        match newest.map(|r| r.into_inner().alerts) {
                            Ok(a) if !a.is_empty() => alerts
                                .clone()
                                .get_alert(with_token(
                                    GetAlertRequest {
                                        id: a[0].id.clone(),
                                    },
                                    &analyst,
                                ))
                                .await
                                .is_ok(),
                            Ok(_) => true,
                            Err(_) => false,
                        }
                    }
                };
                queries.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };

    println!(
        "soak: {secs} s, a sample every {every} s; load {} execs/s, {} files/s, {} connects/s; load average {}",
        env_or::<u64>("LOAD_EXECS", 100),
        env_or::<u64>("LOAD_FILES", 500),
        env_or::<u64>("LOAD_CONNECTS", 20),
        load_average()
    );
    println!(
        "{:>6} | {:>10} {:>5} | {:>10} {:>5} | {:>9} {:>7} {:>7} {:>6} | {:>7}",
        "t (s)",
        "sensor RSS",
        "fds",
        "server RSS",
        "fds",
        "execs",
        "files",
        "conns",
        "alerts",
        "queries"
    );
    let start = Instant::now();
    let (mut sensor_series, mut server_series) = (
        Series {
            t: vec![],
            rss: vec![],
            fds: vec![],
        },
        Series {
            t: vec![],
            rss: vec![],
            fds: vec![],
        },
    );
    let mut alerts_seen = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(every)).await;
        if let Some(s) = sensor.try_wait()? {
            bail!("the sensor exited during the soak: {s}");
        }
        let t = start.elapsed().as_secs_f64();
        let (a, af) = sample(sensor_pid)?;
        let (b, bf) = sample(server_pid)?;
        for (series, rss, fds) in [(&mut sensor_series, a, af), (&mut server_series, b, bf)] {
            series.t.push(t);
            series.rss.push(rss as f64);
            series.fds.push(fds as f64);
        }
        if let Ok(r) = AlertsClient::new(server.channel(None).await?)
            .list_alerts(with_token(
                ListAlertsRequest {
                    page_size: 1,
                    ..Default::default()
                },
                &analyst,
            ))
            .await
        {
            // Aggregated: one alert counts its repeats.
            alerts_seen = r
                .into_inner()
                .alerts
                .first()
                .map_or(0, |a| u64::from(a.count));
        }
        println!(
            "{t:>6.0} | {:>7.1} MiB {af:>5} | {:>7.1} MiB {bf:>5} | {:>9} {:>7} {:>7} {:>6} | {:>7}",
            a as f64 / 1024.0,
            b as f64 / 1024.0,
            done[0].load(Ordering::Relaxed),
            done[1].load(Ordering::Relaxed),
            done[2].load(Ordering::Relaxed),
            alerts_seen,
            queries.load(Ordering::Relaxed),
        );
        std::io::stdout().flush().ok();
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let _ = analyst_task.await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(sensor_pid)?),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let _ = sensor.wait();
    server.stop()?;

    let mut flat = true;
    for (who, s) in [("sensor", &sensor_series), ("server", &server_series)] {
        if s.t.len() < 4 {
            bail!("too few samples: raise SOAK_SECS or lower SAMPLE_SECS");
        }
        let (growth, fd_range, rss_per_h, fds_per_h) = s.verdict();
        let ok = growth < 10.0 && fd_range <= 8.0;
        flat &= ok;
        println!(
            "{who}: second half RSS {:.1}–{:.1} MiB (+{growth:.1}%, slope {rss_per_h:+.1} MiB/h), \
             fds {:.0}–{:.0} (slope {fds_per_h:+.1}/h): {}",
            s.rss[s.t.len() / 2..]
                .iter()
                .copied()
                .fold(f64::MAX, f64::min)
                / 1024.0,
            s.rss[s.t.len() / 2..]
                .iter()
                .copied()
                .fold(f64::MIN, f64::max)
                / 1024.0,
            s.fds[s.t.len() / 2..]
                .iter()
                .copied()
                .fold(f64::MAX, f64::min),
            s.fds[s.t.len() / 2..]
                .iter()
                .copied()
                .fold(f64::MIN, f64::max),
            if ok { "flat" } else { "NOT FLAT" }
        );
    }
    println!(
        "analyst queries: {} ({} failed)",
        queries.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    if !flat {
        std::process::exit(1);
    }
    Ok(())
}
