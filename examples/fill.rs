//! Fills an etcd with about N bytes of Kubernetes-like objects, for the
//! benchmark: JSON with random ids and names (partly compressible, like a
//! real cluster's /registry). Usage: fill <endpoint> <bytes> [seed]

use std::time::Instant;

use etcd_client::{Client, Txn, TxnOp};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn hex(&mut self, n: usize) -> String {
        (0..n).map(|_| format!("{:x}", self.next() % 16)).collect()
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

const KINDS: &[&str] = &[
    "pods",
    "configmaps",
    "secrets",
    "services",
    "events",
    "replicasets",
];
const NAMESPACES: &[&str] = &[
    "default",
    "kube-system",
    "monitoring",
    "ingress",
    "payments",
    "search",
];
const IMAGES: &[&str] = &[
    "registry.k8s.io/pause:3.9",
    "docker.io/library/nginx:1.25.3",
    "quay.io/prometheus/node-exporter:v1.7.0",
    "ghcr.io/example/payments-api:2.14.1",
];

fn object(rng: &mut Rng, i: u64) -> (String, String) {
    let kind = rng.pick(KINDS);
    let ns = rng.pick(NAMESPACES);
    let name = format!(
        "{}-{}-{}",
        rng.pick(&["web", "api", "worker", "cache"]),
        rng.hex(10),
        rng.hex(5)
    );
    let uid = format!(
        "{}-{}-{}-{}-{}",
        rng.hex(8),
        rng.hex(4),
        rng.hex(4),
        rng.hex(4),
        rng.hex(12)
    );
    let mut env = String::new();
    for e in 0..(8 + rng.next() % 24) {
        env.push_str(&format!(
            r#"{{"name":"VAR_{e}","value":"{}"}},"#,
            if rng.next().is_multiple_of(3) {
                rng.hex(32)
            } else {
                format!("value-{}", rng.next() % 50)
            }
        ));
    }
    env.pop();
    let mut annotations = String::new();
    for a in 0..(2 + rng.next() % 6) {
        let len = 24 + (rng.next() % 200) as usize;
        annotations.push_str(&format!(
            r#""example.com/annotation-{a}":"{}","#,
            rng.hex(len)
        ));
    }
    annotations.pop();
    let value = format!(
        r#"{{"apiVersion":"v1","kind":"{kind}","metadata":{{"name":"{name}","namespace":"{ns}","uid":"{uid}","resourceVersion":"{i}","creationTimestamp":"2026-11-{:02}T{:02}:{:02}:{:02}Z","labels":{{"app":"{name}","pod-template-hash":"{}","tier":"{}"}},"annotations":{{{annotations}}},"ownerReferences":[{{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"{name}","uid":"{}","controller":true,"blockOwnerDeletion":true}}]}},"spec":{{"containers":[{{"name":"main","image":"{}","env":[{env}],"resources":{{"limits":{{"cpu":"{}m","memory":"{}Mi"}},"requests":{{"cpu":"100m","memory":"128Mi"}}}},"imagePullPolicy":"IfNotPresent","terminationMessagePath":"/dev/termination-log"}}],"restartPolicy":"Always","dnsPolicy":"ClusterFirst","serviceAccountName":"default","nodeName":"node-{}"}},"status":{{"phase":"Running","podIP":"10.{}.{}.{}","hostIP":"192.0.2.{}","startTime":"2026-11-{:02}T00:00:00Z"}}}}"#,
        1 + rng.next() % 28,
        rng.next() % 24,
        rng.next() % 60,
        rng.next() % 60,
        rng.hex(10),
        rng.pick(&["frontend", "backend", "batch"]),
        rng.hex(32),
        rng.pick(IMAGES),
        100 + rng.next() % 900,
        64 + rng.next() % 2000,
        rng.next() % 300,
        rng.next() % 256,
        rng.next() % 256,
        rng.next() % 256,
        rng.next() % 256,
        1 + rng.next() % 28,
    );
    (format!("/registry/{kind}/{ns}/{name}"), value)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: fill <endpoint> <bytes> [seed]".into());
    }
    let endpoint = &args[1];
    let target: u64 = args[2].parse()?;
    let seed: u64 = args
        .get(3)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(0x5eed_1234_abcd_9876);
    let client = Client::connect([endpoint.as_str()], None).await?;
    let started = Instant::now();
    let mut rng = Rng(seed | 1);
    let (mut written, mut i) = (0u64, 0u64);
    let mut tasks = tokio::task::JoinSet::new();
    while written < target {
        let mut ops = Vec::new();
        let mut batch = 0usize;
        // etcd allows 128 operations and 1.5 MiB per request.
        while batch < 900 * 1024 && ops.len() < 100 && written + (batch as u64) < target {
            let (k, v) = object(&mut rng, i);
            i += 1;
            batch += k.len() + v.len();
            ops.push(TxnOp::put(k, v, None));
        }
        written += batch as u64;
        let mut kv = client.kv_client();
        tasks.spawn(async move { kv.txn(Txn::new().and_then(ops)).await.map(drop) });
        while tasks.len() >= 8 {
            if let Some(r) = tasks.join_next().await {
                r??;
            }
        }
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    eprintln!(
        "filled {} objects, {} bytes in {:.1} s",
        i,
        written,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
