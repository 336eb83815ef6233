//! The benchmark's upload contender: a file into S3 with the same client
//! library, settings and part size the charm uses (object_store, 8 MiB
//! parts, two in flight), as `aws s3 cp` would. Usage: s3put <stores.json>
//! <file> <key>

use std::io::Read;
use std::time::Duration;

use etcd_charm::store::upload::PART;
use etcd_charm::store::{Store, Stores, Timeouts};
use object_store::path::Path;
use object_store::{ObjectStoreExt, WriteMultipart};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, state, file, key] = args.as_slice() else {
        return Err("usage: s3put <stores.json> <file> <key>".into());
    };
    let stores: Stores = serde_json::from_slice(&std::fs::read(state)?)?;
    let settings = stores.stores.values().next().ok_or("no store")?;
    let store = Store::open(
        settings,
        Timeouts {
            stall: Duration::from_secs(60),
        },
    )?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let upload = store
            .objects()
            .put_multipart(&Path::from(key.as_str()))
            .await?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut f = std::fs::File::open(file)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            w.wait_for_capacity(2).await?;
            w.write(&buf[..n]);
        }
        w.finish().await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
