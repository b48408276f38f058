//! The cluster client against a real 3-master Redis Cluster (run `scripts/ensure-redis`
//! first; these tests fail, never skip, without it).

mod common;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use common::redis::{call, run, until, RedisCluster};
use ringwait::dataset::value_of;
use ringwait::lookup::{
    key_slot, ClusterClient, ClusterConfig, LookupError, ReplyHandler, ReplyView,
};
use ringwait::resp::OwnedFrame;

type Outcome = Option<Result<Option<Vec<u8>>, LookupError>>;

struct Record {
    id: usize,
    out: Rc<RefCell<Vec<(u32, Outcome)>>>,
}

impl ReplyHandler for Record {
    fn on_reply(self, reply: Result<ReplyView<'_>, LookupError>) {
        let mut out = self.out.borrow_mut();
        out[self.id].0 += 1;
        out[self.id].1 = Some(reply.map(|v| v.value().map(<[u8]>::to_vec)));
    }
}

/// GETs `k:i` for each `i` in `indexes` and checks every value (all keys below `keys` exist).
async fn check_gets(client: &ClusterClient<Record>, indexes: &[u64], keys: u64) {
    let out = Rc::new(RefCell::new(vec![(0u32, None); indexes.len()]));
    for (id, &i) in indexes.iter().enumerate() {
        let key = format!("k:{i}");
        client
            .get(
                key.as_bytes(),
                Record {
                    id,
                    out: out.clone(),
                },
            )
            .map_err(|r| r.error)
            .unwrap();
    }
    until("cluster replies", || {
        out.borrow().iter().all(|(c, _)| *c > 0)
    })
    .await;
    for (id, (calls, outcome)) in out.borrow().iter().enumerate() {
        assert_eq!(*calls, 1);
        let i = indexes[id];
        let got = outcome
            .clone()
            .unwrap()
            .unwrap_or_else(|e| panic!("k:{i}: {e}"));
        assert_eq!(got, (i < keys).then(|| value_of(i).to_vec()), "k:{i}");
    }
}

#[test]
fn requests_are_routed_to_the_master_of_their_slot() {
    let cluster = RedisCluster::start();
    cluster.populate(3000);
    let seeds = cluster.addrs();
    let owners = cluster.slot_owners();
    let (nodes, redirects, routed) = run(move || async move {
        let client = ClusterClient::connect(&seeds[..1], ClusterConfig::default())
            .await
            .unwrap();
        let indexes: Vec<u64> = (0..3500).collect();
        check_gets(&client, &indexes, 3000).await;
        // Hashes route by their own key too.
        let out = Rc::new(RefCell::new(vec![(0u32, None); 300]));
        for (id, i) in (0..300u64).map(|i| i * 10).enumerate() {
            let key = format!("h:{i}");
            client
                .hget(
                    key.as_bytes(),
                    b"id",
                    Record {
                        id,
                        out: out.clone(),
                    },
                )
                .map_err(|r| r.error)
                .unwrap();
        }
        until("HGET replies", || out.borrow().iter().all(|(c, _)| *c > 0)).await;
        for (id, (_, outcome)) in out.borrow().iter().enumerate() {
            let got = outcome.clone().unwrap().unwrap();
            assert_eq!(got, Some((id * 10).to_string().into_bytes()));
        }
        let routed: BTreeSet<_> = (0..3000u64)
            .map(|i| {
                client
                    .node_for_slot(key_slot(format!("k:{i}").as_bytes()))
                    .unwrap()
            })
            .collect();
        let sample: Vec<_> = (0..16384u16)
            .step_by(97)
            .map(|s| (s, client.node_for_slot(s).unwrap()))
            .collect();
        (
            client.nodes().len(),
            client.stats().redirects,
            (routed, sample),
        )
    });
    assert_eq!(nodes, 3);
    assert_eq!(redirects, 0, "a fresh slot map needs no redirect");
    assert_eq!(routed.0.len(), 3, "keys spread over the 3 masters");
    for (slot, node) in routed.1 {
        assert_eq!(owners[usize::from(slot)], node, "slot {slot}");
    }
}

#[test]
fn lookups_follow_ask_and_moved_while_a_slot_is_resharded() {
    let cluster = RedisCluster::start();
    cluster.populate(3000);
    let key = b"k:1".to_vec();
    let slot = key_slot(&key);
    let source = cluster.owner(slot);
    let target = cluster.addrs().into_iter().find(|a| *a != source).unwrap();
    let source_id = cluster.node_id(source);
    let target_id = cluster.node_id(target);
    let all = cluster.addrs();
    let slot_arg = slot.to_string().into_bytes();
    // Keys of the slot among ours (k:1 and maybe others).
    let in_slot: Vec<u64> = (0..3000u64)
        .filter(|i| key_slot(format!("k:{i}").as_bytes()) == slot)
        .collect();

    let (tx_step, rx_step) = std::sync::mpsc::channel::<()>();
    let (tx_done, rx_done) = std::sync::mpsc::channel::<()>();
    let seeds = all.clone();
    let keys = in_slot.clone();
    let executor = std::thread::spawn(move || {
        run(move || async move {
            let client = ClusterClient::connect(&seeds, ClusterConfig::default())
                .await
                .unwrap();
            check_gets(&client, &keys, 3000).await;
            tx_done.send(()).unwrap();
            // Step 1: keys migrated, slot still MIGRATING on the source: ASK redirects.
            rx_step.recv().unwrap();
            check_gets(&client, &keys, 3000).await;
            let after_ask = client.stats().redirects;
            assert!(after_ask > 0, "ASK was not followed");
            assert_eq!(
                client.node_for_slot(slot),
                Some(source),
                "ASK must not change the slot map"
            );
            tx_done.send(()).unwrap();
            // Step 2: the slot now belongs to the target: MOVED updates the map.
            rx_step.recv().unwrap();
            check_gets(&client, &keys, 3000).await;
            assert!(
                client.stats().redirects > after_ask,
                "MOVED was not followed"
            );
            until("slot map updated", || {
                client.node_for_slot(slot) == Some(target)
            })
            .await;
            check_gets(&client, &keys, 3000).await;
            tx_done.send(()).unwrap();
        })
    });
    rx_done.recv().unwrap();
    let ok = |r: std::io::Result<OwnedFrame>| {
        let r = r.unwrap();
        assert!(!matches!(r, OwnedFrame::Error(_)), "{r:?}");
    };
    ok(call(
        target,
        &[b"CLUSTER", b"SETSLOT", &slot_arg, b"IMPORTING", &source_id],
    ));
    ok(call(
        source,
        &[b"CLUSTER", b"SETSLOT", &slot_arg, b"MIGRATING", &target_id],
    ));
    let mut migrate: Vec<Vec<u8>> = vec![
        b"MIGRATE".to_vec(),
        target.ip().to_string().into_bytes(),
        target.port().to_string().into_bytes(),
        Vec::new(),
        b"0".to_vec(),
        b"5000".to_vec(),
        b"KEYS".to_vec(),
    ];
    migrate.extend(in_slot.iter().map(|i| format!("k:{i}").into_bytes()));
    let args: Vec<&[u8]> = migrate.iter().map(|a| a.as_slice()).collect();
    ok(call(source, &args));
    tx_step.send(()).unwrap();
    rx_done.recv().unwrap();
    for node in &all {
        ok(call(
            *node,
            &[b"CLUSTER", b"SETSLOT", &slot_arg, b"NODE", &target_id],
        ));
    }
    tx_step.send(()).unwrap();
    rx_done.recv().unwrap();
    executor.join().expect("cluster client checks passed");
}
