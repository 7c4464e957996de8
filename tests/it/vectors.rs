//! Test vectors for `format-spec/README.md`.
//!
//! Two kinds of test live here:
//! - frozen literals: given fixed keys, nonces and inputs, the code must produce
//!   exactly these bytes. A failure means the code no longer writes format version
//!   1; fix the code, never the literal.
//! - an independent reader: `fixture_read_by_the_spec_alone` opens the frozen
//!   fixture repository using only the primitives the spec names (argon2, blake3,
//!   aes-gcm-siv, zstd, msgpack) and none of cairn's own decoding code, so the spec,
//!   not just the code, is proven to describe what cairn writes.

use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use serde::Deserialize;

use cairn::chunker::Chunker;
use cairn::config::ChunkerParams;
use cairn::crypto::{KdfParams, MASTER_KEY_LEN, MasterKey, derive_wrapping_key, key_commitment};
use cairn::format::{self, FileKind, SealKind};
use cairn::id::{BlobId, RepoId, SnapshotId};
use cairn::keyfile::KeyFile;
use cairn::pack::{BlobKind, PackEntry};
use cairn::snapshot::{Snapshot, Summary};
use cairn::tree::{Node, NodeKind, Timestamp, Tree, Xattr};

use crate::common;

const SUBKEY_CONTEXT: &str = "cairn 2026-11-24 v1 session subkey";

/// The master key of the vectors: bytes 0, 1, ..., 71 (enc key 0..32, id key
/// 32..64, chunker seed from bytes 64..72 little endian).
fn vector_key_bytes() -> [u8; MASTER_KEY_LEN] {
    let mut b = [0u8; MASTER_KEY_LEN];
    for (i, x) in b.iter_mut().enumerate() {
        *x = i as u8;
    }
    b
}

#[test]
fn file_prefix_bytes() {
    let kinds = [
        (FileKind::Config, 1u8),
        (FileKind::Key, 2),
        (FileKind::Pack, 3),
        (FileKind::Index, 4),
        (FileKind::Snapshot, 5),
        (FileKind::Lock, 6),
        (FileKind::Record, 7),
    ];
    for (kind, byte) in kinds {
        let mut out = Vec::new();
        format::write_prefix(&mut out, kind);
        assert_eq!(
            out,
            [0x89, 0x43, 0x52, 0x4E, 0x0D, 0x0A, 0x1A, 0x0A, 0x01, byte]
        );
    }
}

#[test]
fn associated_data_layout() {
    let repo = RepoId([0xA5; 32]);
    let blob = BlobId([0x3C; 32]);
    let kinds = [
        (SealKind::Config, 1u8),
        (SealKind::MasterKey, 2),
        (SealKind::PackHeader, 3),
        (SealKind::Index, 4),
        (SealKind::Snapshot, 5),
        (SealKind::Lock, 6),
        (SealKind::Record, 7),
    ];
    for (kind, byte) in kinds {
        let mut want = vec![0xA5; 32];
        want.extend_from_slice(&[1, byte]);
        assert_eq!(format::aad(&repo, kind, None), want);
    }
    for (kind, byte) in [(SealKind::DataBlob, 16u8), (SealKind::TreeBlob, 17)] {
        let mut want = vec![0xA5; 32];
        want.extend_from_slice(&[1, byte]);
        want.extend_from_slice(&[0x3C; 32]);
        assert_eq!(format::aad(&repo, kind, Some(&blob)), want);
    }
}

#[test]
fn blob_id_is_keyed_blake3_under_the_id_key() {
    let key = MasterKey::from_bytes(&vector_key_bytes());
    let id = key.blob_id(b"cairn format v1");
    assert_eq!(id.to_hex(), BLOB_ID_VECTOR);
    let id_key: [u8; 32] = vector_key_bytes()[32..64].try_into().unwrap();
    assert_eq!(
        blake3::keyed_hash(&id_key, b"cairn format v1").as_bytes(),
        &id.0
    );
    assert_eq!(key.chunker_seed(), 0x4746_4544_4342_4140);
}

const BLOB_ID_VECTOR: &str = "646a44fd23389438b90d50df14a086120cbbe7660160de182d2864bba4647ace";

#[test]
fn seal_under_a_session_subkey() {
    let key = MasterKey::from_bytes(&vector_key_bytes());
    let session = [0x11u8; 32];
    let nonce = [0x22u8; 12];
    let repo = RepoId([0xA5; 32]);
    let plaintext = b"cairn format v1";
    let id = key.blob_id(plaintext);
    let payload = format::encode_payload(plaintext, 0);
    assert_eq!(payload[0], 0, "level 0 stores the payload raw");
    let aad = format::aad(&repo, SealKind::DataBlob, Some(&id));
    let sealed = key
        .session(&session)
        .seal_with_nonce(&nonce, &aad, &payload)
        .unwrap();
    assert_eq!(hex::encode(&sealed), SEAL_VECTOR);
    assert_eq!(sealed.len(), 12 + payload.len() + 16);

    // The same bytes from the primitives alone.
    let mut material = vector_key_bytes()[..32].to_vec();
    material.extend_from_slice(&session);
    let subkey = blake3::derive_key(SUBKEY_CONTEXT, &material);
    let cipher = Aes256GcmSiv::new((&subkey).into());
    let ct = cipher
        .encrypt(
            &Nonce::try_from(&nonce[..]).expect("12-byte nonce"),
            Payload {
                msg: &payload,
                aad: &aad,
            },
        )
        .unwrap();
    assert_eq!(&sealed[..12], &nonce);
    assert_eq!(&sealed[12..], &ct[..]);
}

/// nonce (22…) || AES-256-GCM-SIV ciphertext of `00 "cairn format v1"` || tag.
const SEAL_VECTOR: &str = concat!(
    "222222222222222222222222",
    "8c769a8e1eabb468eb44a500bb0ef91d",
    "953744b4069e2093a87917a20b42c16b"
);

#[test]
fn argon2id_wrapping_key() {
    let params = KdfParams {
        memory_kib: 64,
        iterations: 2,
        parallelism: 1,
        salt: vec![0x5A; 32],
    };
    let kek = derive_wrapping_key(b"correct horse battery staple", &params).unwrap();
    assert_eq!(hex::encode(&kek[..]), ARGON2_VECTOR);
}

const ARGON2_VECTOR: &str = "970800cd4733e502caabafe0684333b0d77550b0e5005f5c28a69fa5fd86816d";

/// The same with 4 lanes, as new password keys use (format-spec §4). Checked
/// against the reference implementation (Debian's `argon2` command):
/// `echo -n "correct horse battery staple" | argon2 $(printf 'Z%.0s' {1..32}) -id -t 2 -k 64 -p 4 -l 32 -r`.
#[test]
fn argon2id_wrapping_key_with_four_lanes() {
    let params = KdfParams {
        memory_kib: 64,
        iterations: 2,
        parallelism: 4,
        salt: vec![0x5A; 32],
    };
    let kek = derive_wrapping_key(b"correct horse battery staple", &params).unwrap();
    assert_eq!(hex::encode(&kek[..]), ARGON2_LANES_VECTOR);
}

const ARGON2_LANES_VECTOR: &str =
    "ab5457e4bf9a95d60fa3780ba65d3b0a358ad29740eeaa2af5a43cbd3dc82412";

const COMMITMENT_CONTEXT: &str = "cairn 2026-11-29 v1 key commitment";

/// §9: the commitment to the §4 Argon2id vector's output, from cairn and from
/// BLAKE3 alone; and a key file written with those parameters carries it.
#[test]
fn key_commitment_of_the_argon2_vector() {
    let params = KdfParams {
        memory_kib: 64,
        iterations: 2,
        parallelism: 1,
        salt: vec![0x5A; 32],
    };
    let password = b"correct horse battery staple";
    let kek = derive_wrapping_key(password, &params).unwrap();
    assert_eq!(hex::encode(&kek[..]), ARGON2_VECTOR);
    assert_eq!(hex::encode(key_commitment(&kek)), KEY_COMMITMENT_VECTOR);
    assert_eq!(
        hex::encode(blake3::derive_key(COMMITMENT_CONTEXT, &kek[..])),
        KEY_COMMITMENT_VECTOR
    );

    let key = MasterKey::from_bytes(&vector_key_bytes());
    let file = KeyFile::create(&key, RepoId([0xA5; 32]), password, params)
        .unwrap()
        .encode();
    let kf: SpecKeyFile = rmp_serde::from_slice(&file[10..]).unwrap();
    assert_eq!(
        hex::encode(kf.commitment.expect("new key files carry a commitment")),
        KEY_COMMITMENT_VECTOR
    );
}

const KEY_COMMITMENT_VECTOR: &str =
    "5e74efd66f955199a088668dcf197d6c9e340c66794c11f70ef064d671d130eb";

/// §17: the Argon2 caps, at and just past each bound. Validation derives nothing,
/// so the refused parameters cost nothing here.
#[test]
fn argon2_caps_of_section_17() {
    let params = |memory_kib: u32, iterations: u32| KdfParams {
        memory_kib,
        iterations,
        parallelism: 1,
        salt: vec![0x5A; 32],
    };
    for (m, i) in ARGON2_CAPS_ACCEPTED {
        assert!(params(*m, *i).validate("k").is_ok(), "{m} KiB × {i}");
    }
    for (m, i) in ARGON2_CAPS_REFUSED {
        assert!(
            matches!(
                params(*m, *i).validate("k"),
                Err(cairn::Error::KdfOverCap { .. })
            ),
            "{m} KiB × {i}"
        );
    }
}

const ARGON2_CAPS_ACCEPTED: &[(u32, u32)] = &[(1048576, 4), (262144, 16), (262144, 10), (8, 16)];
const ARGON2_CAPS_REFUSED: &[(u32, u32)] = &[
    (1048577, 1),
    (1024, 17),
    (524288, 16),
    (1048576, 5),
    (262145, 16),
];

#[test]
fn chunk_boundaries_depend_on_the_seed() {
    let params = ChunkerParams {
        min_size: 64,
        avg_size: 256,
        max_size: 1024,
    };
    let data = common::xorshift(0x5EED, 8192);
    let seeded = Chunker::new(params, 0x4746_4544_4342_4140).cuts(&data);
    let lengths: Vec<usize> = seeded.iter().map(|c| c.1).collect();
    assert_eq!(lengths, CHUNK_LENGTHS_SEEDED);
    let unseeded = Chunker::new(params, 0).cuts(&data);
    let lengths: Vec<usize> = unseeded.iter().map(|c| c.1).collect();
    assert_eq!(lengths, CHUNK_LENGTHS_SEED_0);
    // Offsets tile the input.
    let mut next = 0;
    for (offset, len) in seeded {
        assert_eq!(offset, next);
        next += len;
    }
    assert_eq!(next, data.len());
}

/// §10 and the threat model: FastCDC's masks test only bits 0..=47 of the gear
/// hash, and hash bit j depends only on seed bits 0..=j, so the top 16 seed bits
/// never move a boundary, while the bits below them do.
#[test]
fn only_the_low_48_seed_bits_move_chunk_boundaries() {
    let data = common::xorshift(0x5EED, 1 << 20);
    let seed = 0x4746_4544_4342_4140u64;
    for (min, avg, max) in [(64, 256, 1024), (16 << 10, 64 << 10, 256 << 10)] {
        let params = ChunkerParams {
            min_size: min,
            avg_size: avg,
            max_size: max,
        };
        let cuts = |s: u64| Chunker::new(params, s).cuts(&data);
        let base = cuts(seed);
        assert!(base.len() > 3, "{avg}: enough boundaries to compare");
        for bit in 48..64 {
            assert_eq!(cuts(seed ^ (1 << bit)), base, "bit {bit}, avg {avg}");
        }
        assert_eq!(cuts(seed ^ (0xFFFF << 48)), base);
        let moved = (32..48)
            .filter(|bit| cuts(seed ^ (1 << bit)) != base)
            .count();
        assert!(
            moved > 8,
            "avg {avg}: only {moved} of bits 32..48 move boundaries"
        );
    }
}

const CHUNK_LENGTHS_SEEDED: &[usize] = &[
    299, 359, 248, 329, 405, 395, 370, 290, 210, 260, 373, 347, 96, 433, 132, 302, 495, 334, 230,
    208, 498, 563, 249, 75, 474, 218,
];
const CHUNK_LENGTHS_SEED_0: &[usize] = &[
    256, 298, 322, 584, 264, 260, 261, 143, 535, 336, 353, 526, 287, 361, 262, 137, 525, 412, 246,
    331, 193, 444, 278, 290, 288,
];

#[test]
fn payload_encoding_byte() {
    assert_eq!(format::encode_payload(b"abc", 0), b"\x00abc");
    let text = b"the same line again\n".repeat(50);
    let z = format::encode_payload(&text, 3);
    assert_eq!(z[0], 1);
    assert_eq!(&z[1..5], &[0x28, 0xB5, 0x2F, 0xFD], "a zstd frame follows");
    assert_eq!(zstd::decode_all(&z[1..]).unwrap(), text);
}

#[test]
fn pack_entry_is_a_five_element_array() {
    let e = PackEntry {
        kind: BlobKind::Tree,
        id: BlobId([7; 32]),
        offset: 42,
        length: 300,
        raw_length: 70_000,
    };
    let bytes = rmp_serde::to_vec(&e).unwrap();
    let mut want = vec![0x95, 0x01, 0xC4, 0x20];
    want.extend_from_slice(&[7; 32]);
    want.extend_from_slice(&[0x2A, 0xCD, 0x01, 0x2C, 0xCE, 0x00, 0x01, 0x11, 0x70]);
    assert_eq!(bytes, want);
    // Named-struct encoding does not change arrays.
    assert_eq!(rmp_serde::to_vec_named(&e).unwrap(), want);
}

/// §6 padding: zero bytes after a raw msgpack body, a zstd skippable frame after
/// a compressed one, up to a stored length that is a power of two ≥ 4096.
#[test]
fn padding_of_pack_headers_and_index_files() {
    let mut header = vec![0x00, 0x93, 0x01, 0x02, 0x03];
    format::pad_payload(&mut header, 28);
    assert_eq!(header.len(), 4068);
    assert_eq!(&header[..5], &[0x00, 0x93, 0x01, 0x02, 0x03]);
    assert!(header[5..].iter().all(|&b| b == 0));

    let frame: Vec<u8> = (0..20).collect();
    let mut index = vec![0x01];
    index.extend_from_slice(&frame);
    format::pad_payload(&mut index, 70);
    assert_eq!(index.len(), 4026);
    assert_eq!(&index[1..21], &frame[..]);
    assert_eq!(
        &index[21..29],
        &[0x50, 0x2A, 0x4D, 0x18, 0x9D, 0x0F, 0x00, 0x00]
    );
    assert_eq!(index.len() - 29, 3997);
    assert!(index[29..].iter().all(|&b| b == 0));

    // Already on a bucket: nothing is added.
    let mut exact = vec![0u8; 4096 - 28];
    format::pad_payload(&mut exact, 28);
    assert_eq!(exact.len(), 4096 - 28);
}

#[test]
fn tree_encoding() {
    let node = Node {
        name: b"caf\xe9".to_vec(),
        kind: NodeKind::File,
        mode: 0o4755,
        uid: 1000,
        gid: 100,
        user: Some("ada".into()),
        group: None,
        mtime: Timestamp(1_700_000_000, 123_456_789),
        atime: Timestamp(-1, 0),
        ctime: Timestamp(0, 999_999_999),
        size: 5,
        inode: 77,
        device: 2049,
        links: 1,
        rdev: 0,
        link_target: None,
        content: vec![BlobId([0xEE; 32])],
        subtree: None,
        xattrs: vec![Xattr {
            name: b"user.k".to_vec(),
            value: b"v".to_vec(),
        }],
    };
    let mut tree = Tree { nodes: vec![node] };
    let bytes = tree.encode();
    assert_eq!(hex::encode(&bytes), TREE_VECTOR);
    let back = Tree::decode(&bytes, &BlobId([0; 32])).unwrap();
    assert_eq!(back, tree);
}

/// `{"nodes": [{"name": bin "caf\xe9", "kind": "file", "mode": 0o4755, "uid": 1000,
/// "gid": 100, "user": "ada", "mtime": [1700000000, 123456789], "atime": [-1, 0],
/// "ctime": [0, 999999999], "size": 5, "inode": 77, "device": 2049, "links": 1,
/// "content": [bin ee…], "xattrs": [{"name": bin "user.k", "value": bin "v"}]}]}`;
/// `group`, `rdev`, `link_target` and `subtree` are omitted.
const TREE_VECTOR: &str = concat!(
    "81a56e6f64657391",
    "8f",
    "a46e616d65c404636166e9",
    "a46b696e64a466696c65",
    "a46d6f6465cd09ed",
    "a3756964cd03e8",
    "a367696464",
    "a475736572a3616461",
    "a56d74696d6592ce6553f100ce075bcd15",
    "a56174696d6592ff00",
    "a56374696d659200ce3b9ac9ff",
    "a473697a6505",
    "a5696e6f64654d",
    "a6646576696365cd0801",
    "a56c696e6b7301",
    "a7636f6e74656e7491c420eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee",
    "a67861747472739182a46e616d65c406757365722e6ba576616c7565c40176"
);

/// §14: a copy's snapshot, with `parent` and `original`; `excludes`, `errors`
/// and `warnings` are empty and so omitted.
fn vector_snapshot() -> Snapshot {
    Snapshot {
        time: "2026-11-29T10:00:00.000000001+01:00".into(),
        hostname: "h".into(),
        username: "u".into(),
        uid: 1000,
        gid: 100,
        paths: vec!["/d".into()],
        tags: vec!["t".into()],
        tree: BlobId([0x11; 32]),
        parent: Some(SnapshotId([0x22; 32])),
        original: Some(SnapshotId([0x33; 32])),
        replaces: None,
        excludes: vec![],
        program_version: "cairn 0.1.0".into(),
        summary: Summary {
            entries: 2,
            total_bytes: 5,
            started: "s".into(),
            finished: "f".into(),
            ..Summary::default()
        },
        errors: vec![],
        warnings: vec![],
    }
}

#[test]
fn snapshot_encoding() {
    let snap = vector_snapshot();
    let bytes = format::to_msgpack(&snap);
    assert_eq!(hex::encode(&bytes), SNAPSHOT_VECTOR);
    let what = || "snapshot vector".to_string();
    let back: Snapshot = format::from_msgpack(&bytes, &what).unwrap();
    assert_eq!(back, snap);

    // A key this version doesn't know (a later addition, §18) is ignored: the
    // map gets one more entry, "zz": 42, at its end.
    assert_eq!(bytes[0], 0x8c, "a map of 12 keys");
    let mut unknown = vec![0x8d];
    unknown.extend_from_slice(&bytes[1..]);
    unknown.extend_from_slice(&[0xa2, b'z', b'z', 0x2a]);
    let back: Snapshot = format::from_msgpack(&unknown, &what).unwrap();
    assert_eq!(back, snap);

    // A reader that predates `original` (one knowing only some keys, as the
    // fixture's reader below) reads the copy too.
    let old: SpecSnapshot = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(old.paths, ["/d"]);
    assert_eq!(old.tree, [0x11; 32]);

    // Without `original` the key is omitted, and the snapshot is not a copy.
    let plain = Snapshot {
        original: None,
        replaces: None,
        ..snap
    };
    let bytes = format::to_msgpack(&plain);
    assert_eq!(bytes[0], 0x8b);
    assert!(!bytes.windows(9).any(|w| w == b"\xa8original"));
    let back: Snapshot = format::from_msgpack(&bytes, &what).unwrap();
    assert_eq!(back.original, None);
}

/// §14: a snapshot `cairn tag` or `cairn rewrite` wrote, naming the snapshot it
/// replaces; `replaces` follows `original` in the map.
#[test]
fn snapshot_encoding_with_replaces() {
    let snap = Snapshot {
        replaces: Some(SnapshotId([0x44; 32])),
        ..vector_snapshot()
    };
    let bytes = format::to_msgpack(&snap);
    assert_eq!(hex::encode(&bytes), SNAPSHOT_REPLACES_VECTOR);
    let what = || "snapshot vector".to_string();
    let back: Snapshot = format::from_msgpack(&bytes, &what).unwrap();
    assert_eq!(back, snap);
    assert_eq!(back.replaces, Some(SnapshotId([0x44; 32])));

    // A reader that predates `replaces` reads it (and ignores the key).
    let old: SpecSnapshot = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(old.tree, [0x11; 32]);
    // The snapshot without it is the vector above, byte for byte: a snapshot
    // that replaces nothing omits the key.
    let plain = Snapshot {
        replaces: None,
        ..snap
    };
    assert_eq!(hex::encode(format::to_msgpack(&plain)), SNAPSHOT_VECTOR);
}

/// [`SNAPSHOT_VECTOR`] with `"replaces": bin 44…` after `original`: a map of 13 keys.
const SNAPSHOT_REPLACES_VECTOR: &str = concat!(
    "8d",
    "a474696d65d923323032362d31312d32395431303a30303a30302e3030303030303030312b30313a3030",
    "a8686f73746e616d65a168",
    "a8757365726e616d65a175",
    "a3756964cd03e8",
    "a367696464",
    "a5706174687391a22f64",
    "a47461677391a174",
    "a474726565c4201111111111111111111111111111111111111111111111111111111111111111",
    "a6706172656e74c4202222222222222222222222222222222222222222222222222222222222222222",
    "a86f726967696e616cc4203333333333333333333333333333333333333333333333333333333333333333",
    "a87265706c61636573c4204444444444444444444444444444444444444444444444444444444444444444",
    "af70726f6772616d5f76657273696f6eab636169726e20302e312e30",
    "a773756d6d6172798f",
    "a966696c65735f6e657700ad66696c65735f6368616e67656400af66696c65735f756e6368616e67656400",
    "a8646972735f6e657700ac646972735f6368616e67656400ae646972735f756e6368616e67656400",
    "a7656e747269657302ab746f74616c5f627974657305aa62797465735f7265616400a962797465735f6e657700",
    "ab62797465735f616464656400ae646174615f626c6f62735f6e657700ae747265655f626c6f62735f6e657700",
    "a773746172746564a173a866696e6973686564a166",
);

/// `{"time": "2026-11-29T10:00:00.000000001+01:00", "hostname": "h", "username":
/// "u", "uid": 1000, "gid": 100, "paths": ["/d"], "tags": ["t"], "tree": bin 11…,
/// "parent": bin 22…, "original": bin 33…, "program_version": "cairn 0.1.0",
/// "summary": {15 counters and times, in §14's order}}`.
const SNAPSHOT_VECTOR: &str = concat!(
    "8c",
    "a474696d65d923323032362d31312d32395431303a30303a30302e3030303030303030312b30313a3030",
    "a8686f73746e616d65a168",
    "a8757365726e616d65a175",
    "a3756964cd03e8",
    "a367696464",
    "a5706174687391a22f64",
    "a47461677391a174",
    "a474726565c4201111111111111111111111111111111111111111111111111111111111111111",
    "a6706172656e74c4202222222222222222222222222222222222222222222222222222222222222222",
    "a86f726967696e616cc4203333333333333333333333333333333333333333333333333333333333333333",
    "af70726f6772616d5f76657273696f6eab636169726e20302e312e30",
    "a773756d6d6172798f",
    "a966696c65735f6e657700ad66696c65735f6368616e67656400af66696c65735f756e6368616e67656400",
    "a8646972735f6e657700ac646972735f6368616e67656400ae646972735f756e6368616e67656400",
    "a7656e747269657302ab746f74616c5f627974657305aa62797465735f7265616400a962797465735f6e657700",
    "ab62797465735f616464656400ae646174615f626c6f62735f6e657700ae747265655f626c6f62735f6e657700",
    "a773746172746564a173a866696e6973686564a166",
);

// ---------------------------------------------------------------------------------
// An independent reader of the frozen fixture, written from the spec.

const FIXTURE: &str = "tests/fixtures/repo-v1";
const FIXTURE_PASSWORD: &[u8] = b"cairn fixture v1";
const MAGIC: [u8; 8] = [0x89, 0x43, 0x52, 0x4E, 0x0D, 0x0A, 0x1A, 0x0A];

#[derive(Deserialize)]
struct SpecKdf {
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
    #[serde(with = "serde_bytes")]
    salt: Vec<u8>,
}

#[derive(Deserialize)]
struct SpecKeyFile {
    #[serde(with = "serde_bytes")]
    repo_id: Vec<u8>,
    kdf: SpecKdf,
    #[serde(with = "serde_bytes")]
    wrapped: Vec<u8>,
    #[serde(default, with = "serde_bytes")]
    commitment: Option<Vec<u8>>,
}

#[derive(Deserialize)]
struct SpecChunker {
    min_size: u32,
    avg_size: u32,
    max_size: u32,
}

#[derive(Deserialize)]
struct SpecConfig {
    version: u32,
    #[serde(with = "serde_bytes")]
    repo_id: Vec<u8>,
    chunker: SpecChunker,
}

#[derive(Deserialize)]
struct SpecSnapshot {
    #[serde(with = "serde_bytes")]
    tree: Vec<u8>,
    paths: Vec<String>,
}

type SpecEntry = (u8, serde_bytes::ByteBuf, u32, u32, u32);

#[derive(Deserialize)]
struct SpecIndexPack {
    #[serde(with = "serde_bytes")]
    id: Vec<u8>,
    size: u64,
    blobs: Vec<SpecEntry>,
}

#[derive(Deserialize)]
struct SpecIndex {
    packs: Vec<SpecIndexPack>,
}

#[derive(Deserialize)]
struct SpecNode {
    #[serde(with = "serde_bytes")]
    name: Vec<u8>,
    kind: String,
    mode: u32,
    size: u64,
    #[serde(default)]
    content: Vec<serde_bytes::ByteBuf>,
    #[serde(default)]
    subtree: Option<serde_bytes::ByteBuf>,
    #[serde(default)]
    link_target: Option<serde_bytes::ByteBuf>,
}

#[derive(Deserialize)]
struct SpecTree {
    nodes: Vec<SpecNode>,
}

fn only_file(dir: &str) -> (String, Vec<u8>) {
    only_file_in(std::path::Path::new(FIXTURE), dir)
}

fn only_file_in(root: &std::path::Path, dir: &str) -> (String, Vec<u8>) {
    let d = root.join(dir);
    let mut names: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 1, "fixture {dir}/ holds one file");
    let name = names.remove(0);
    let bytes = std::fs::read(d.join(&name)).unwrap();
    (name, bytes)
}

/// Checks the name is the BLAKE3 of the bytes and the prefix is magic, 1, kind.
fn body(name: &str, bytes: &[u8], kind: u8) -> Vec<u8> {
    assert_eq!(blake3::hash(bytes).to_hex().as_str(), name);
    assert_eq!(&bytes[..8], &MAGIC);
    assert_eq!(bytes[8], 1);
    assert_eq!(bytes[9], kind);
    bytes[10..].to_vec()
}

fn aad(repo: &[u8], kind: u8, blob: Option<&[u8]>) -> Vec<u8> {
    let mut a = repo.to_vec();
    a.extend_from_slice(&[1, kind]);
    if let Some(b) = blob {
        a.extend_from_slice(b);
    }
    a
}

fn subkey_cipher(master: &[u8], session: &[u8]) -> Aes256GcmSiv {
    let mut material = master[..32].to_vec();
    material.extend_from_slice(session);
    Aes256GcmSiv::new((&blake3::derive_key(SUBKEY_CONTEXT, &material)).into())
}

fn open(cipher: &Aes256GcmSiv, sealed: &[u8], aad: &[u8]) -> Vec<u8> {
    cipher
        .decrypt(
            &Nonce::try_from(&sealed[..12]).expect("12-byte nonce"),
            Payload {
                msg: &sealed[12..],
                aad,
            },
        )
        .expect("authenticates")
}

fn unpayload(p: &[u8]) -> Vec<u8> {
    match p[0] {
        0 => p[1..].to_vec(),
        1 => zstd::decode_all(&p[1..]).unwrap(),
        other => panic!("payload byte {other}"),
    }
}

/// The fixture's repository id and master key, from its key file and password
/// by the spec alone (§4, §9).
fn spec_master_key(root: &std::path::Path) -> (Vec<u8>, Vec<u8>) {
    let (name, bytes) = only_file_in(root, "keys");
    let kf: SpecKeyFile = rmp_serde::from_slice(&body(&name, &bytes, 2)).unwrap();
    let params = argon2::Params::new(
        kf.kdf.memory_kib,
        kf.kdf.iterations,
        kf.kdf.parallelism,
        Some(32),
    )
    .unwrap();
    let mut kek = [0u8; 32];
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_into(FIXTURE_PASSWORD, &kf.kdf.salt, &mut kek)
        .unwrap();
    // Written before key commitments: the tag alone decides (§9).
    assert!(kf.commitment.is_none());
    let master = open(
        &Aes256GcmSiv::new((&kek).into()),
        &kf.wrapped,
        &aad(&kf.repo_id, 2, None),
    );
    assert_eq!(master.len(), 72);
    (kf.repo_id, master)
}

#[test]
fn fixture_read_by_the_spec_alone() {
    // Key file: prefix, then a plain msgpack map.
    let (repo, master) = spec_master_key(std::path::Path::new(FIXTURE));

    // Config: prefix, repository id in the clear, session id, sealed payload.
    let bytes = std::fs::read(std::path::Path::new(FIXTURE).join("config")).unwrap();
    assert_eq!(
        &bytes[..10],
        &[0x89, 0x43, 0x52, 0x4E, 0x0D, 0x0A, 0x1A, 0x0A, 1, 1]
    );
    assert_eq!(&bytes[10..42], &repo[..]);
    let plain = open(
        &subkey_cipher(&master, &bytes[42..74]),
        &bytes[74..],
        &aad(&repo, 1, None),
    );
    let config: SpecConfig = rmp_serde::from_slice(&unpayload(&plain)).unwrap();
    assert_eq!(config.version, 1);
    assert_eq!(config.repo_id, repo);
    assert_eq!(
        (
            config.chunker.min_size,
            config.chunker.avg_size,
            config.chunker.max_size
        ),
        (64, 256, 1024)
    );

    // Snapshot and index: prefix, session id, sealed payload.
    let sealed_file = |dir: &str, kind: u8| {
        let (name, bytes) = only_file(dir);
        let b = body(&name, &bytes, kind);
        unpayload(&open(
            &subkey_cipher(&master, &b[..32]),
            &b[32..],
            &aad(&repo, kind, None),
        ))
    };
    let snap: SpecSnapshot = rmp_serde::from_slice(&sealed_file("snapshots", 5)).unwrap();
    assert_eq!(snap.paths.len(), 1);
    let index: SpecIndex = rmp_serde::from_slice(&sealed_file("index", 4)).unwrap();

    // A blob: find it in the index by (kind, id) (§12), read its pack, check the
    // pack against its own header, open the blob and check its keyed hash.
    let id_key: [u8; 32] = master[32..64].try_into().unwrap();
    let read_blob = |want: u8, id: &[u8]| -> (u8, Vec<u8>) {
        let (pack, entry) = index
            .packs
            .iter()
            .find_map(|p| {
                p.blobs
                    .iter()
                    .find(|e| e.0 == want && &e.1[..] == id)
                    .map(|e| (p, e))
            })
            .expect("blob in index");
        let hexname = hex::encode(&pack.id);
        let path = std::path::Path::new(FIXTURE)
            .join("data")
            .join(&hexname[..2])
            .join(&hexname);
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(bytes.len() as u64, pack.size);
        let b = body(&hexname, &bytes, 3);
        let cipher = subkey_cipher(&master, &b[..32]);
        // Trailer: the sealed header's length, u32 little endian.
        let n = bytes.len();
        let hlen = u32::from_le_bytes(bytes[n - 4..].try_into().unwrap()) as usize;
        let header = unpayload(&open(
            &cipher,
            &bytes[n - 4 - hlen..n - 4],
            &aad(&repo, 3, None),
        ));
        let entries: Vec<SpecEntry> = rmp_serde::from_slice(&header).unwrap();
        assert_eq!(entries.len(), pack.blobs.len());
        assert!(
            entries.contains(entry),
            "index entry matches the pack header"
        );
        let (kind, _, offset, length, raw) = entry.clone();
        let sealed = &bytes[offset as usize..(offset + length) as usize];
        let plain = unpayload(&open(&cipher, sealed, &aad(&repo, 16 + kind, Some(id))));
        assert_eq!(plain.len(), raw as usize);
        assert_eq!(blake3::keyed_hash(&id_key, &plain).as_bytes(), id);
        (kind, plain)
    };

    // Walk from the snapshot's root tree to a file and a symlink.
    let (kind, root) = read_blob(1, &snap.tree);
    assert_eq!(kind, 1, "the root is a tree blob");
    let root: SpecTree = rmp_serde::from_slice(&root).unwrap();
    let names: Vec<&[u8]> = root.nodes.iter().map(|n| &n.name[..]).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "tree nodes are sorted by name bytes");
    // The root mirrors the backed-up path's components: descend through them.
    let mut top = root;
    while !top.nodes.iter().any(|n| n.name == b"hello.txt") {
        assert_eq!(top.nodes.len(), 1, "one backed-up path");
        assert_eq!(top.nodes[0].kind, "dir");
        let (kind, next) = read_blob(1, top.nodes[0].subtree.as_ref().unwrap());
        assert_eq!(kind, 1);
        top = rmp_serde::from_slice(&next).unwrap();
    }
    let hello = top.nodes.iter().find(|n| n.name == b"hello.txt").unwrap();
    assert_eq!(hello.kind, "file");
    assert_eq!(hello.size, 16);
    let content: Vec<u8> = hello
        .content
        .iter()
        .flat_map(|id| read_blob(0, id).1)
        .collect();
    assert_eq!(content, b"hello, cairn v1\n");
    let link = top.nodes.iter().find(|n| n.name == b"link").unwrap();
    assert_eq!(link.kind, "symlink");
    assert_eq!(&link.link_target.as_ref().unwrap()[..], b"hello.txt");
    let log = top.nodes.iter().find(|n| n.name == b"train.log").unwrap();
    assert_eq!(log.mode, 0o640);
    let sub = top.nodes.iter().find(|n| n.name == b"sub").unwrap();
    let (_, sub) = read_blob(1, sub.subtree.as_ref().unwrap());
    let sub: SpecTree = rmp_serde::from_slice(&sub).unwrap();
    assert!(sub.nodes.iter().any(|n| n.name == b"caf\xe9.txt"));
}

// ---------------------------------------------------------------------------------
// Records (§20).

/// §20: a drill record's msgpack map, keys in the order the spec gives.
#[test]
fn record_encoding() {
    let r = vector_record();
    assert_eq!(hex::encode(cairn::record::encode(&r)), RECORD_VECTOR);
    let what = || "vector".to_string();
    let bytes = hex::decode(RECORD_VECTOR).unwrap();
    assert_eq!(cairn::record::decode(&bytes, &what).unwrap(), r);
    let spec: SpecRecord = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(
        (
            spec.kind.as_str(),
            spec.ok,
            spec.files,
            spec.bytes,
            spec.seconds
        ),
        ("drill", false, 2, 10, 0.5)
    );
    assert_eq!(spec.snapshot.as_deref(), Some(&[0x5A; 32][..]));
    assert_eq!(spec.class.as_deref(), Some("data"));
    assert_eq!(spec.problems, ["/d/a: differs"]);
}

fn vector_record() -> cairn::record::Record {
    use cairn::record::{Record, RecordKind};
    Record {
        kind: RecordKind::Drill,
        time: "2026-12-01T03:00:00+00:00".into(),
        hostname: "h".into(),
        username: "u".into(),
        program_version: "cairn 0.1.0".into(),
        class: Some("data".into()),
        snapshot: Some(cairn::id::SnapshotId([0x5A; 32])),
        ok: false,
        problems: vec!["/d/a: differs".into()],
        files: 2,
        bytes: 10,
        seconds: 0.5,
        detail: "2 files".into(),
        removed_snapshots: vec![],
        removed_index: vec![],
    }
}

/// `{"kind": "drill", "time": "2026-12-01T03:00:00+00:00", "hostname": "h",
/// "username": "u", "program_version": "cairn 0.1.0", "class": "data",
/// "snapshot": bin 5a…, "ok": false, "problems": ["/d/a: differs"], "files": 2,
/// "bytes": 10, "seconds": float64 0.5, "detail": "2 files"}`.
const RECORD_VECTOR: &str = concat!(
    "8d",
    "a46b696e64a56472696c6c",
    "a474696d65b9323032362d31322d30315430333a30303a30302b30303a3030",
    "a8686f73746e616d65a168",
    "a8757365726e616d65a175",
    "af70726f6772616d5f76657273696f6eab636169726e20302e312e30",
    "a5636c617373a464617461",
    "a8736e617073686f74c420",
    "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
    "a26f6bc2",
    "a870726f626c656d7391ad2f642f613a2064696666657273",
    "a566696c657302",
    "a562797465730a",
    "a77365636f6e6473cb3fe0000000000000",
    "a664657461696ca7322066696c6573"
);

#[derive(Deserialize)]
struct SpecRecord {
    kind: String,
    ok: bool,
    #[serde(default)]
    class: Option<String>,
    #[serde(default, with = "serde_bytes")]
    snapshot: Option<Vec<u8>>,
    #[serde(default)]
    problems: Vec<String>,
    #[serde(default)]
    files: u64,
    #[serde(default)]
    bytes: u64,
    #[serde(default)]
    seconds: f64,
}

/// §20 and §2: the fixture, which has no `records/`, opens and reads no records;
/// a record cairn writes into a copy of it reads back with the spec's
/// primitives alone: prefix kind 7, session id, sealed under seal kind 7, named
/// by its hash.
#[test]
fn record_read_by_the_spec_alone() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    copy_tree(std::path::Path::new(FIXTURE), &root);
    assert!(!root.join("records").exists());
    let repo = Arc::new(
        cairn::repository::Repository::open(
            Arc::new(cairn::backend::LocalBackend::new(&root)),
            FIXTURE_PASSWORD,
        )
        .unwrap(),
    );
    let (ok, bad) = cairn::record::load_all(&repo).unwrap();
    assert!(ok.is_empty() && bad.is_empty());
    let r = vector_record();
    let id = {
        let _lock = cairn::lock::acquire(&repo, false).unwrap();
        cairn::record::save(&repo, &r).unwrap()
    };
    let (name, bytes) = only_file_in(&root, "records");
    assert_eq!(name, id.to_hex());
    let b = body(&name, &bytes, 7);
    let (repo_id, master) = spec_master_key(&root);
    let plain = unpayload(&open(
        &subkey_cipher(&master, &b[..32]),
        &b[32..],
        &aad(&repo_id, 7, None),
    ));
    let spec: SpecRecord = rmp_serde::from_slice(&plain).unwrap();
    assert_eq!((spec.kind.as_str(), spec.files), ("drill", 2));
    assert_eq!(
        hex::encode(&plain),
        RECORD_VECTOR,
        "the whole map, as in the vector"
    );
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A removal record (§20): the ids it lists, as msgpack `bin` in arrays.
#[test]
fn removal_record_encoding() {
    use cairn::record::{Record, RecordKind};
    let mut r = Record::new(RecordKind::Removal);
    r.time = "2026-11-29T00:00:00+00:00".into();
    r.hostname = "h".into();
    r.username = "u".into();
    r.program_version = "cairn 0.1.0".into();
    r.ok = true;
    r.detail = "forget".into();
    r.removed_snapshots = vec![cairn::id::SnapshotId([0x11; 32])];
    r.removed_index = vec![cairn::id::IndexId([0x22; 32])];
    let bytes = cairn::record::encode(&r);
    assert_eq!(hex::encode(&bytes), REMOVAL_VECTOR);
    let what = || "vector".to_string();
    assert_eq!(cairn::record::decode(&bytes, &what).unwrap(), r);
}

/// `{"kind": "removal", "time": "2026-11-29T00:00:00+00:00", "hostname": "h",
/// "username": "u", "program_version": "cairn 0.1.0", "ok": true, "detail":
/// "forget", "removed_snapshots": [bin 11…], "removed_index": [bin 22…]}`.
const REMOVAL_VECTOR: &str = concat!(
    "89",
    "a46b696e64a772656d6f76616c",
    "a474696d65b9323032362d31312d32395430303a30303a30302b30303a3030",
    "a8686f73746e616d65a168",
    "a8757365726e616d65a175",
    "af70726f6772616d5f76657273696f6eab636169726e20302e312e30",
    "a26f6bc3",
    "a664657461696ca6666f72676574",
    "b172656d6f7665645f736e617073686f747391c420",
    "1111111111111111111111111111111111111111111111111111111111111111",
    "ad72656d6f7665645f696e64657891c420",
    "2222222222222222222222222222222222222222222222222222222222222222",
);
