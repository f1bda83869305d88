//! An NFS server on an engine made as the CLI makes it, and a client (the
//! `nfs3_client` crate) with small helpers for each NFSv3 call the tests make.

use hf_mount::cli::prepare_engine;
use hf_mount::frontends::nfs::{NfsOptions, NfsServer};
use nfs3_client::tokio::{TokioConnector, TokioIo};
use nfs3_client::{Nfs3Connection, Nfs3ConnectionBuilder};
use nfs3_types::nfs3::*;
use nfs3_types::xdr_codec::Opaque;
use tokio::net::TcpStream;

use super::Hub;

pub type Conn = Nfs3Connection<TokioIo<TcpStream>>;

pub struct Served {
    pub server: Option<NfsServer>,
    pub rt: tokio::runtime::Runtime,
    pub dir: Option<hf_mount::cli::MountDir>,
    pub _cache: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop();
        }
    }
}

pub fn serve(hub: &Hub, args: &[&str]) -> Served {
    serve_with(hub, args, &NfsOptions::default())
}

pub fn serve_with(hub: &Hub, args: &[&str], opts: &NfsOptions) -> Served {
    let mut argv: Vec<String> = vec!["test".into(), args[0].into(), args[1].into()];
    argv.extend(args[2..].iter().map(|s| s.to_string()));
    argv.extend(["--hub-endpoint".into(), hub.endpoint()]);
    if !args.contains(&"--read-timeout-ms") {
        argv.extend(["--read-timeout-ms".into(), "10000".into()]);
    }
    let cache = tempfile::tempdir().unwrap();
    if !args.contains(&"--cache-dir") {
        argv.extend(["--cache-dir".into(), cache.path().display().to_string()]);
    }
    let (rt, engine, dir) = prepare_engine(&super::parse_args(&argv), hf_mount::config::Frontend::Nfs).unwrap();
    let server = rt.block_on(NfsServer::start_with(engine, "127.0.0.1:0", opts)).unwrap();
    Served { server: Some(server), rt, dir: Some(dir), _cache: cache }
}

impl Served {
    pub fn port(&self) -> u16 {
        self.server.as_ref().unwrap().addr.port()
    }

    pub fn connect(&self) -> Conn {
        self.rt.block_on(connect(self.port()))
    }
}

pub async fn lookup_path(c: &mut Conn, path: &str) -> Result<nfs_fh3, nfsstat3> {
    let mut fh = c.root_nfs_fh3();
    for name in path.split('/').filter(|s| !s.is_empty()) {
        let args = LOOKUP3args {
            what: diropargs3 { dir: fh.clone(), name: filename3(Opaque::owned(name.as_bytes().to_vec())) },
        };
        match c.nfs3_client.lookup(&args).await.unwrap() {
            Nfs3Result::Ok(ok) => fh = ok.object,
            Nfs3Result::Err((stat, _)) => return Err(stat),
        }
    }
    Ok(fh)
}

pub async fn read_range(c: &mut Conn, fh: &nfs_fh3, offset: u64, count: u32) -> Result<(Vec<u8>, bool), nfsstat3> {
    match c.nfs3_client.read(&READ3args { file: fh.clone(), offset, count }).await.unwrap() {
        Nfs3Result::Ok(ok) => Ok((ok.data.0.to_vec(), ok.eof)),
        Nfs3Result::Err((stat, _)) => Err(stat),
    }
}

pub async fn try_read_all(c: &mut Conn, fh: &nfs_fh3) -> Result<Vec<u8>, nfsstat3> {
    let mut out = Vec::new();
    loop {
        let (data, eof) = read_range(c, fh, out.len() as u64, 1 << 20).await?;
        out.extend_from_slice(&data);
        if eof || data.is_empty() {
            return Ok(out);
        }
    }
}

pub async fn read_all(c: &mut Conn, fh: &nfs_fh3) -> Vec<u8> {
    try_read_all(c, fh).await.unwrap()
}

/// Every entry of a directory through READDIRPLUS paging; returns names and the page count.
pub async fn list_all(c: &mut Conn, dir: &nfs_fh3, maxcount: u32) -> (Vec<String>, usize) {
    try_list_all(c, dir, maxcount).await.unwrap_or_else(|e| panic!("readdirplus failed: {e:?}"))
}

pub async fn try_list_all(c: &mut Conn, dir: &nfs_fh3, maxcount: u32) -> Result<(Vec<String>, usize), nfsstat3> {
    let (mut names, mut cookie, mut verf, mut pages) = (Vec::new(), 0u64, cookieverf3::default(), 0);
    loop {
        let args = READDIRPLUS3args { dir: dir.clone(), cookie, cookieverf: verf, dircount: maxcount, maxcount };
        let ok = match c.nfs3_client.readdirplus(&args).await.unwrap() {
            Nfs3Result::Ok(ok) => ok,
            Nfs3Result::Err((stat, _)) => return Err(stat),
        };
        pages += 1;
        verf = ok.cookieverf;
        for e in &ok.reply.entries.0 {
            let name = String::from_utf8(e.name.0.to_vec()).unwrap();
            cookie = e.cookie;
            if name != "." && name != ".." {
                names.push(name);
            }
        }
        if ok.reply.eof {
            return Ok((names, pages));
        }
    }
}

impl Served {
    /// Stops the server at once, as a crash would (the journal keeps what is pending); the
    /// cache dir is let go.
    pub fn kill(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop();
        }
        self.dir = None;
    }
}

/// A client of the server on `port` (its MOUNT and NFS programs share the port).
pub async fn connect(port: u16) -> Conn {
    Nfs3ConnectionBuilder::new(TokioConnector, "127.0.0.1", "/")
        .connect_from_privileged_port(false)
        .mount_port(port)
        .nfs3_port(port)
        .mount()
        .await
        .unwrap()
}

pub fn name(n: &str) -> filename3<'static> {
    filename3(Opaque::owned(n.as_bytes().to_vec()))
}

pub fn dirop<'a>(dir: &nfs_fh3, n: &str) -> diropargs3<'a> {
    diropargs3 { dir: dir.clone(), name: name(n) }
}

/// The handle a CREATE, MKDIR or SYMLINK answered.
fn made(obj: post_op_fh3) -> nfs_fh3 {
    match obj {
        Nfs3Option::Some(fh) => fh,
        Nfs3Option::None => panic!("no handle in the reply"),
    }
}

pub async fn create(c: &mut Conn, dir: &nfs_fh3, n: &str, how: createhow3) -> Result<nfs_fh3, nfsstat3> {
    match c.nfs3_client.create(&CREATE3args { where_: dirop(dir, n), how }).await.unwrap() {
        Nfs3Result::Ok(ok) => Ok(made(ok.obj)),
        Nfs3Result::Err((stat, _)) => Err(stat),
    }
}

/// An UNCHECKED create with mode 0644.
pub async fn create_file(c: &mut Conn, dir: &nfs_fh3, n: &str) -> nfs_fh3 {
    let attrs = sattr3 { mode: Nfs3Option::Some(0o644), ..Default::default() };
    create(c, dir, n, createhow3::UNCHECKED(attrs)).await.unwrap_or_else(|e| panic!("create {n}: {e:?}"))
}

/// WRITE; answers the count, how stable the server says it is, and the verifier.
pub async fn write(
    c: &mut Conn,
    fh: &nfs_fh3,
    offset: u64,
    data: &[u8],
    stable: stable_how,
) -> Result<(u32, stable_how, writeverf3), nfsstat3> {
    let args = WRITE3args { file: fh.clone(), offset, count: data.len() as u32, stable, data: Opaque::borrowed(data) };
    match c.nfs3_client.write(&args).await.unwrap() {
        Nfs3Result::Ok(ok) => Ok((ok.count, ok.committed, ok.verf)),
        Nfs3Result::Err((stat, _)) => Err(stat),
    }
}

/// Writes `data` from offset 0 in 1 MiB WRITEs; answers the verifier of the last.
pub async fn write_all(c: &mut Conn, fh: &nfs_fh3, data: &[u8], stable: stable_how) -> writeverf3 {
    let mut verf = writeverf3::default();
    for (i, chunk) in data.chunks(1 << 20).enumerate() {
        let (n, committed, v) = write(c, fh, (i << 20) as u64, chunk, stable).await.unwrap();
        assert_eq!(n as usize, chunk.len());
        assert!(committed as u32 >= stable as u32, "asked {stable:?}, answered {committed:?}");
        verf = v;
    }
    verf
}

pub async fn commit(c: &mut Conn, fh: &nfs_fh3) -> Result<writeverf3, nfsstat3> {
    match c.nfs3_client.commit(&COMMIT3args { file: fh.clone(), offset: 0, count: 0 }).await.unwrap() {
        Nfs3Result::Ok(ok) => Ok(ok.verf),
        Nfs3Result::Err((stat, _)) => Err(stat),
    }
}

pub async fn mkdir(c: &mut Conn, dir: &nfs_fh3, n: &str) -> Result<nfs_fh3, nfsstat3> {
    let attributes = sattr3 { mode: Nfs3Option::Some(0o755), ..Default::default() };
    match c.nfs3_client.mkdir(&MKDIR3args { where_: dirop(dir, n), attributes }).await.unwrap() {
        Nfs3Result::Ok(ok) => Ok(made(ok.obj)),
        Nfs3Result::Err((stat, _)) => Err(stat),
    }
}

pub async fn symlink(c: &mut Conn, dir: &nfs_fh3, n: &str, target: &str) -> Result<nfs_fh3, nfsstat3> {
    let symlink = symlinkdata3 {
        symlink_attributes: sattr3::default(),
        symlink_data: nfspath3(Opaque::owned(target.as_bytes().to_vec())),
    };
    match c.nfs3_client.symlink(&SYMLINK3args { where_: dirop(dir, n), symlink }).await.unwrap() {
        Nfs3Result::Ok(ok) => Ok(made(ok.obj)),
        Nfs3Result::Err((stat, _)) => Err(stat),
    }
}

pub async fn readlink(c: &mut Conn, fh: &nfs_fh3) -> Result<String, nfsstat3> {
    match c.nfs3_client.readlink(&READLINK3args { symlink: fh.clone() }).await.unwrap() {
        Nfs3Result::Ok(ok) => Ok(String::from_utf8(ok.data.0.to_vec()).unwrap()),
        Nfs3Result::Err((stat, _)) => Err(stat),
    }
}

pub async fn remove(c: &mut Conn, dir: &nfs_fh3, n: &str) -> Result<(), nfsstat3> {
    match c.nfs3_client.remove(&REMOVE3args { object: dirop(dir, n) }).await.unwrap() {
        Nfs3Result::Ok(_) => Ok(()),
        Nfs3Result::Err((stat, _)) => Err(stat),
    }
}

pub async fn rmdir(c: &mut Conn, dir: &nfs_fh3, n: &str) -> Result<(), nfsstat3> {
    match c.nfs3_client.rmdir(&RMDIR3args { object: dirop(dir, n) }).await.unwrap() {
        Nfs3Result::Ok(_) => Ok(()),
        Nfs3Result::Err((stat, _)) => Err(stat),
    }
}

pub async fn rename(c: &mut Conn, from: &nfs_fh3, fname: &str, to: &nfs_fh3, tname: &str) -> Result<(), nfsstat3> {
    match c.nfs3_client.rename(&RENAME3args { from: dirop(from, fname), to: dirop(to, tname) }).await.unwrap() {
        Nfs3Result::Ok(_) => Ok(()),
        Nfs3Result::Err((stat, _)) => Err(stat),
    }
}

pub async fn link(c: &mut Conn, fh: &nfs_fh3, dir: &nfs_fh3, n: &str) -> Result<(), nfsstat3> {
    match c.nfs3_client.link(&LINK3args { file: fh.clone(), link: dirop(dir, n) }).await.unwrap() {
        Nfs3Result::Ok(_) => Ok(()),
        Nfs3Result::Err((stat, _)) => Err(stat),
    }
}

pub async fn setattr(c: &mut Conn, fh: &nfs_fh3, attrs: sattr3, guard: sattrguard3) -> Result<(), nfsstat3> {
    let args = SETATTR3args { object: fh.clone(), new_attributes: attrs, guard };
    match c.nfs3_client.setattr(&args).await.unwrap() {
        Nfs3Result::Ok(_) => Ok(()),
        Nfs3Result::Err((stat, _)) => Err(stat),
    }
}

pub async fn getattr(c: &mut Conn, fh: &nfs_fh3) -> Result<fattr3, nfsstat3> {
    match c.nfs3_client.getattr(&GETATTR3args { object: fh.clone() }).await.unwrap() {
        Nfs3Result::Ok(ok) => Ok(ok.obj_attributes),
        Nfs3Result::Err((stat, _)) => Err(stat),
    }
}
