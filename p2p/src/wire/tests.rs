use super::*;
use proptest::prelude::*;

fn layout() -> Layout {
    // Three pieces of 1 KiB and a short last one.
    Layout {
        pieces: 4,
        piece_length: 1024,
        length: 3 * 1024 + 100,
    }
}

fn all_messages() -> Vec<Message> {
    let mut bf = Bitfield::new(4);
    bf.set(1);
    bf.set(3);
    vec![
        Message::KeepAlive,
        Message::Bitfield(bf),
        Message::Have(3),
        Message::Request(0),
        Message::Cancel(2),
        Message::Reject(1),
        Message::Piece {
            index: 1,
            data: Bytes::from(vec![7u8; 1024]),
        },
        Message::Piece {
            index: 3,
            data: Bytes::from(vec![9u8; 100]),
        },
        Message::Error {
            code: ErrorCode::Busy,
            message: "too many connections".into(),
        },
        Message::Error {
            code: ErrorCode::Other(999),
            message: String::new(),
        },
    ]
}

#[test]
fn messages_round_trip_whole_and_byte_by_byte() {
    let d = Decoder::new(layout());
    let mut stream = BytesMut::new();
    for m in all_messages() {
        let mut one = BytesMut::new();
        m.encode(&mut one);
        assert!(one.len() <= d.max_frame_len(), "{m:?}");
        assert_eq!(d.decode(&mut one).unwrap(), Some(m.clone()));
        assert!(one.is_empty());
        m.encode(&mut stream);
    }
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for b in stream {
        buf.put_u8(b);
        while let Some(m) = d.decode(&mut buf).unwrap() {
            out.push(m);
        }
    }
    assert_eq!(out, all_messages());
}

#[test]
fn hello_round_trip_and_rejects() {
    let h = Hello {
        digest: Digest::sha256_of(b"blob"),
        peer_id: PeerId([5; 20]),
        origin: true,
    };
    let enc = h.encode();
    assert_eq!(enc.len(), HELLO_PREFIX + 32 + 20);
    for cut in 0..enc.len() {
        assert!(Hello::decode(&enc[..cut]).unwrap().is_none(), "{cut}");
    }
    assert_eq!(Hello::decode(&enc).unwrap(), Some((h.clone(), enc.len())));
    assert!(matches!(
        Hello::decode(b"GET / HTTP/1.1\r\n"),
        Err(WireError::NotShoal)
    ));
    assert!(matches!(Hello::decode(b"shoak"), Err(WireError::NotShoal)));
    let mut v2 = enc.clone();
    v2[10] = 2;
    assert!(matches!(Hello::decode(&v2), Err(WireError::Version(2))));
    let mut alg = enc.clone();
    alg[12] = 7;
    assert!(matches!(Hello::decode(&alg), Err(WireError::Algorithm(7))));
}

#[tokio::test]
async fn read_hello_leaves_what_follows() {
    let h = Hello {
        digest: Digest::sha256_of(b"x"),
        peer_id: PeerId([1; 20]),
        origin: false,
    };
    let mut bytes = h.encode();
    bytes.extend_from_slice(&[0, 0, 0, 0]);
    let mut r = &bytes[..];
    assert_eq!(read_hello(&mut r).await.unwrap(), h);
    assert_eq!(r, &[0, 0, 0, 0]);
}

#[test]
fn bounds_and_malformed_frames() {
    let d = Decoder::new(layout());
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (vec![0, 0, 0, 6, KIND_HAVE, 0, 0, 0, 1, 0], "have too long"),
        (vec![0, 0, 0, 4, KIND_HAVE, 0, 0, 0], "have too short"),
        (vec![0, 0, 0, 5, KIND_HAVE, 0, 0, 0, 4], "have index"),
        (vec![0, 0, 0, 5, 42, 0, 0, 0, 0], "unknown kind"),
        (vec![0xff, 0xff, 0xff, 0xff, KIND_PIECE], "huge piece"),
        (vec![0, 0, 0, 2, KIND_BITFIELD, 0xff], "spare bits"),
        (vec![0, 0, 0, 3, KIND_BITFIELD, 0, 0], "bitfield too long"),
        (vec![0, 0, 0, 2, KIND_ERROR, 0], "error too short"),
        (
            vec![0, 0, 0, 5, KIND_ERROR, 0, 1, 0xff, 0xfe],
            "error not utf8",
        ),
    ];
    for (bytes, why) in bad {
        let mut buf = BytesMut::from(&bytes[..]);
        assert!(d.decode(&mut buf).is_err(), "{why}");
    }
    // A piece of the wrong size for its index, even if it fits the largest piece.
    let mut buf = BytesMut::new();
    buf.put_slice(&piece_header(3, 1024));
    buf.put_slice(&[0u8; 1024]);
    assert!(matches!(
        d.decode(&mut buf),
        Err(WireError::PieceLength { index: 3, .. })
    ));
    // The length is judged from the header alone, before the payload arrives.
    let mut buf = BytesMut::from(&[0u8, 0x10, 0, 0, KIND_PIECE][..]);
    assert!(matches!(d.decode(&mut buf), Err(WireError::TooLong { .. })));
}

#[tokio::test]
async fn read_message_reads_pieces_in_chunks() {
    let big = Layout {
        pieces: 2,
        piece_length: 256 << 10,
        length: 300 << 10,
    };
    let d = Decoder::new(big);
    let data = Bytes::from((0..256u32 << 10).map(|i| i as u8).collect::<Vec<_>>());
    let m = Message::Piece {
        index: 0,
        data: data.clone(),
    };
    let bytes = m.to_bytes();
    let mut r = &bytes[..];
    let mut chunks = Vec::new();
    let got = read_message(&mut r, &d, &Unpaced, |n| chunks.push(n))
        .await
        .unwrap();
    assert_eq!(got, m);
    assert_eq!(chunks, vec![READ_CHUNK; 4]);
}

/// A reader over arbitrary bytes that records the largest buffer the decoder reserved.
async fn read_all(bytes: &[u8], d: &Decoder) -> usize {
    let mut r = bytes;
    loop {
        match read_message(&mut r, d, &Unpaced, |_| {}).await {
            Ok(_) => {}
            Err(_) => return bytes.len() - r.len(),
        }
    }
}

fn arb_layout() -> impl Strategy<Value = Layout> {
    (1u32..64, 1u32..5000).prop_flat_map(|(pieces, piece_length)| {
        let min = (pieces as u64 - 1) * piece_length as u64 + 1;
        let max = pieces as u64 * piece_length as u64;
        (min..=max).prop_map(move |length| Layout {
            pieces,
            piece_length,
            length,
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// On arbitrary bytes, fed in arbitrary pieces, the decoder never panics, never keeps
    /// more than one frame's bound buffered, and never claims a frame longer than its bound.
    #[test]
    fn decoder_never_panics_or_overreaches(
        layout in arb_layout(),
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        cuts in proptest::collection::vec(1usize..97, 1..64),
    ) {
        let d = Decoder::new(layout);
        let bound = d.max_frame_len();
        let mut buf = BytesMut::new();
        let mut rest = &bytes[..];
        let mut cut = cuts.iter().cycle();
        'feed: while !rest.is_empty() {
            let n = (*cut.next().unwrap()).min(rest.len());
            buf.put_slice(&rest[..n]);
            rest = &rest[n..];
            loop {
                match d.frame_len(&buf) {
                    Ok(Some(total)) => prop_assert!(total <= bound),
                    Ok(None) => {}
                    Err(_) => break 'feed,
                }
                match d.decode(&mut buf) {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
            prop_assert!(buf.len() <= bound + 97);
        }
    }

    /// Valid frames with arbitrary garbage after them: every valid frame decodes, then the
    /// garbage fails cleanly or decodes as something well-formed.
    #[test]
    fn socket_reader_never_panics(
        layout in arb_layout(),
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let d = Decoder::new(layout);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let consumed = rt.block_on(read_all(&bytes, &d));
        prop_assert!(consumed <= bytes.len());
    }

    #[test]
    fn hello_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(Some((_, n))) = Hello::decode(&bytes) {
            prop_assert!(n <= MAX_HELLO_LEN);
        }
    }

    /// A frame claiming any length is refused from its header if the length is beyond
    /// the bound for its kind: nothing is read or reserved for it.
    #[test]
    fn header_lengths_are_bounded(layout in arb_layout(), len in any::<u32>(), kind in any::<u8>()) {
        let d = Decoder::new(layout);
        if d.check_header(len, kind).is_ok() {
            prop_assert!(4 + len as usize <= d.max_frame_len());
        }
    }
}
