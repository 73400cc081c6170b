//! Proxies, stores, connectors and the registry of trusted connectors.

use tributary_stream::{
    Connector, ConnectorDescriptor, ConnectorError, ConnectorRegistry, FileConnector, Json, Key,
    MemoryConnector, Proxy, ResolveError, Store,
};

use crate::stream_support::TempDir;

#[tokio::test]
async fn an_evicting_proxy_resolves_once_and_removes_the_object() {
    let memory = MemoryConnector::new();
    let store = Store::new(memory.clone(), Json);
    let key = store.put(&"payload".to_owned()).await.unwrap();
    let registry = ConnectorRegistry::new().with_connector(memory.clone());

    let proxy: Proxy<String> = store.proxy_from_key(key.clone(), true);
    let copy: Proxy<String> =
        serde_json::from_str::<Proxy<String>>(&serde_json::to_string(&proxy).unwrap())
            .unwrap()
            .bind(&registry, Json);
    assert!(!proxy.is_resolved());
    assert_eq!(proxy.resolve().await.unwrap(), "payload");
    assert!(memory.is_empty(), "the one resolve evicted the object");
    // Cached: resolving again does not touch the store.
    assert_eq!(proxy.resolve().await.unwrap(), "payload");
    assert_eq!(proxy.get().map(String::as_str), Some("payload"));

    let err = copy.resolve().await.unwrap_err();
    assert!(
        matches!(&err, ResolveError::MissingKey { key: k, .. } if *k == key),
        "{err:?}"
    );
}

#[tokio::test]
async fn concurrent_resolves_read_the_store_once() {
    let memory = MemoryConnector::new();
    let store = Store::new(memory.clone(), Json);
    let key = store.put(&7u32).await.unwrap();
    let proxy: Proxy<u32> = store.proxy_from_key(key, true);
    let (a, b) = tokio::join!(proxy.resolve(), proxy.resolve());
    assert_eq!(
        (*a.unwrap(), *b.unwrap()),
        (7, 7),
        "the second waits for the first, no MissingKey"
    );
}

#[tokio::test]
async fn a_non_evicting_proxy_leaves_the_object_for_others() {
    let memory = MemoryConnector::new();
    let store = Store::new(memory.clone(), Json);
    let proxy = store.proxy(vec![1u8, 2], false).await.unwrap();
    assert!(proxy.is_resolved(), "the producer side keeps its value");
    let wire = serde_json::to_string(&proxy).unwrap();
    assert!(
        !wire.contains("[1,2]"),
        "a proxy serializes as a reference, not a value: {wire}"
    );
    let registry = ConnectorRegistry::new().with_connector(memory.clone());
    for _ in 0..2 {
        let p: Proxy<Vec<u8>> = serde_json::from_str::<Proxy<Vec<u8>>>(&wire)
            .unwrap()
            .bind(&registry, Json);
        assert_eq!(p.into_value().await.unwrap(), [1, 2]);
    }
    assert_eq!(memory.len(), 1);
}

#[tokio::test]
async fn a_missing_object_gives_a_clear_error() {
    let memory = MemoryConnector::new();
    let store: Store<u32> = Store::new(memory.clone(), Json);
    let proxy = store.proxy_from_key(Key::new("nothing-here"), false);
    let err = proxy.resolve().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "object nothing-here is missing from the memory connector"
    );
    assert!(!proxy.is_resolved());
}

#[tokio::test]
async fn an_untrusted_or_unbound_connector_is_never_used() {
    let memory = MemoryConnector::new();
    let store = Store::new(memory.clone(), Json);
    let key = store.put(&1u32).await.unwrap();
    let wire = serde_json::to_string(&store.proxy_from_key(key.clone(), false)).unwrap();

    let unbound: Proxy<u32> = serde_json::from_str(&wire).unwrap();
    assert!(matches!(
        unbound.resolve().await,
        Err(ResolveError::Unbound { .. })
    ));

    // Another memory connector is another instance: not trusted.
    let other = ConnectorRegistry::new().with_connector(MemoryConnector::new());
    let p: Proxy<u32> = serde_json::from_str::<Proxy<u32>>(&wire)
        .unwrap()
        .bind(&other, Json);
    let err = p.resolve().await.unwrap_err();
    assert!(
        matches!(&err, ResolveError::UntrustedConnector { kind, .. } if kind == "memory"),
        "{err:?}"
    );

    // An event naming a kind nobody registered.
    let forged: Proxy<u32> = Proxy::unbound(
        key,
        ConnectorDescriptor::new("shell", serde_json::json!({ "cmd": "rm -rf /" })),
        false,
    )
    .bind(&ConnectorRegistry::new(), Json);
    let err = forged.resolve().await.unwrap_err();
    assert!(err.to_string().contains("`shell`"), "{err}");
}

#[tokio::test]
async fn a_file_kind_is_trusted_only_under_its_root() {
    let root = TempDir::new();
    let outside = TempDir::new();
    let inside = FileConnector::new(root.0.join("objects")).unwrap();
    let elsewhere = FileConnector::new(&outside.0).unwrap();
    let registry =
        ConnectorRegistry::new().with_kind(FileConnector::KIND, FileConnector::kind_under(&root.0));

    let key = inside
        .put(bytes::Bytes::from_static(b"\"in\""))
        .await
        .unwrap();
    let p: Proxy<String> = Proxy::unbound(key, inside.descriptor(), false).bind(&registry, Json);
    assert_eq!(p.resolve().await.unwrap(), "in");

    let key = elsewhere
        .put(bytes::Bytes::from_static(b"\"out\""))
        .await
        .unwrap();
    let p: Proxy<String> = Proxy::unbound(key, elsewhere.descriptor(), false).bind(&registry, Json);
    let err = p.resolve().await.unwrap_err();
    match err {
        ResolveError::Connector {
            source: ConnectorError::InvalidConfig { reason, .. },
            ..
        } => {
            assert!(reason.contains("outside the trusted root"), "{reason}");
        }
        other => panic!("expected a refused config, got {other:?}"),
    }
}

pub(crate) async fn connector_contract(c: &dyn Connector) {
    let a = c.put(bytes::Bytes::from_static(b"a")).await.unwrap();
    let keys = c
        .put_batch(vec![
            bytes::Bytes::from_static(b"b"),
            bytes::Bytes::from_static(b"c"),
        ])
        .await
        .unwrap();
    assert_eq!(keys.len(), 2);
    assert!(c.exists(&a).await.unwrap());
    assert_eq!(c.get(&a).await.unwrap().as_deref(), Some(&b"a"[..]));
    let missing = Key::new("missing0");
    let got = c
        .get_batch(&[keys[1].clone(), missing.clone(), keys[0].clone()])
        .await
        .unwrap();
    assert_eq!(
        got.iter().map(|o| o.as_deref()).collect::<Vec<_>>(),
        [Some(&b"c"[..]), None, Some(&b"b"[..])]
    );
    c.evict(&a).await.unwrap();
    assert!(!c.exists(&a).await.unwrap());
    assert_eq!(c.get(&a).await.unwrap(), None);
    c.evict(&a).await.unwrap(); // evicting a missing key is not an error
    c.evict(&missing).await.unwrap();
    for k in keys {
        c.evict(&k).await.unwrap();
    }
}

#[tokio::test]
async fn memory_and_file_connectors_keep_the_connector_contract() {
    connector_contract(&MemoryConnector::new()).await;
    let dir = TempDir::new();
    connector_contract(&FileConnector::new(&dir.0).unwrap()).await;
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 0);
}

#[tokio::test]
async fn a_file_reader_never_sees_a_partial_object() {
    let dir = TempDir::new();
    let files = FileConnector::new(&dir.0).unwrap();
    // A writer in the middle of a put has only its temporary file.
    std::fs::write(dir.0.join(".halfway.tmp"), b"partial").unwrap();
    let key = Key::new("halfway");
    assert!(!files.exists(&key).await.unwrap());
    assert_eq!(files.get(&key).await.unwrap(), None);
    // A finished put is visible in full under its key.
    let data = bytes::Bytes::from(vec![9u8; 1 << 20]);
    let key = files.put(data.clone()).await.unwrap();
    assert_eq!(files.get(&key).await.unwrap(), Some(data));
}

#[tokio::test]
async fn a_file_key_cannot_leave_its_directory() {
    let dir = TempDir::new();
    let files = FileConnector::new(&dir.0).unwrap();
    for bad in ["../etc/passwd", "a/b", "", ".hidden"] {
        let err = files.get(&Key::new(bad)).await.unwrap_err();
        assert!(
            matches!(err, ConnectorError::InvalidKey { .. }),
            "{bad}: {err:?}"
        );
    }
}

/// Fails every put after the first `ok` ones.
#[derive(Debug)]
struct FailsAfter {
    inner: MemoryConnector,
    ok: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Connector for FailsAfter {
    fn descriptor(&self) -> ConnectorDescriptor {
        self.inner.descriptor()
    }
    async fn put(&self, data: bytes::Bytes) -> Result<Key, ConnectorError> {
        use std::sync::atomic::Ordering;
        if self.ok.load(Ordering::SeqCst) == 0 {
            return Err(ConnectorError::InvalidConfig {
                kind: "test".into(),
                reason: "disk full".into(),
            });
        }
        self.ok.fetch_sub(1, Ordering::SeqCst);
        self.inner.put(data).await
    }
    async fn get(&self, key: &Key) -> Result<Option<bytes::Bytes>, ConnectorError> {
        self.inner.get(key).await
    }
    async fn exists(&self, key: &Key) -> Result<bool, ConnectorError> {
        self.inner.exists(key).await
    }
    async fn evict(&self, key: &Key) -> Result<(), ConnectorError> {
        self.inner.evict(key).await
    }
}

#[tokio::test]
async fn a_batch_put_that_fails_halfway_leaves_nothing_behind() {
    let memory = MemoryConnector::new();
    let connector = FailsAfter {
        inner: memory.clone(),
        ok: 2.into(),
    };
    let data = (0..4u8).map(|i| bytes::Bytes::from(vec![i])).collect();
    assert!(connector.put_batch(data).await.is_err());
    assert!(
        memory.is_empty(),
        "the two objects stored before the failure were evicted"
    );
}
