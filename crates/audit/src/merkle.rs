//! The RFC 6962 / RFC 9162 Merkle tree: tree heads, inclusion and consistency proofs,
//! and their verification.
//!
//! This is the one cryptographic construction written by hand in MEDICODAX (DESIGN.md
//! §5). Hashing is `medicodax_wire::hash`: a leaf is `SHA-256(0x00 || data)`, an interior
//! node `SHA-256(0x01 || left || right)`, the empty tree `SHA-256()`.
//!
//! - [`Frontier`] is the compact range `[0, n)`: the roots of the perfect subtrees along
//!   the tree's right edge, one per set bit of `n`. Appending a leaf is O(log n) hashing
//!   (amortised O(1)), and so is the tree head, which is what lets the audit writer keep
//!   the root of a large log current without rehashing it.
//! - [`inclusion_ranges`] and [`consistency_ranges`] follow the recursive definitions of
//!   RFC 9162 §2.1.3.1 and §2.1.4.1 down to the disjoint leaf ranges whose tree heads
//!   make up a proof; [`inclusion_proof`] and [`consistency_proof`] take those heads from
//!   a slice of leaf hashes, [`RangeRoots`] in one streaming pass over a stored log.
//! - [`verify_inclusion`] and [`verify_consistency`] are the verification algorithms of
//!   RFC 9162 §2.1.3.2 and §2.1.4.2, step for step.
//!
//! The tests use the published test vectors of Google's Trillian / transparency-dev Merkle
//! library (see `tests` below for the source).

use medicodax_wire::hash::{Digest32, node_hash, sha256};
use std::ops::Range;

/// The tree head of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Digest32 {
    sha256(b"")
}

/// Why a proof could not be produced or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The index asked for.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// The older size is larger than the newer one.
    #[error("consistency asked from size {first} to the smaller size {second}")]
    SizesReversed {
        /// The older (claimed smaller) size.
        first: u64,
        /// The newer size.
        second: u64,
    },
    /// The proof has the wrong number of hashes for these sizes.
    #[error("the proof has {got} hashes but a proof for these sizes has {want}")]
    WrongLength {
        /// Hashes given.
        got: usize,
        /// Hashes expected.
        want: usize,
    },
    /// The proof leads to a different root than the one given.
    #[error("the proof does not lead to the given root")]
    RootMismatch,
    /// A hash in hex form is malformed.
    #[error("not a SHA-256 hash in lowercase hex (64 characters): {0:?}")]
    BadHex(String),
}

/// The compact range `[0, size)` of a log: enough to append and to compute the root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// Roots of perfect subtrees, largest (leftmost) first; one per set bit of `size`.
    stack: Vec<Digest32>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a frontier by appending every leaf hash in order.
    pub fn from_leaves<'a>(leaves: impl IntoIterator<Item = &'a Digest32>) -> Self {
        let mut f = Self::new();
        for l in leaves {
            f.push(*l);
        }
        f
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf hash: O(log n) node hashes at worst, amortised one.
    pub fn push(&mut self, leaf: Digest32) {
        let mut h = leaf;
        let mut s = self.size;
        // Each trailing one bit of the old size is a perfect subtree of the same height
        // as the one being carried, so the two merge.
        while s & 1 == 1 {
            match self.stack.pop() {
                Some(left) => h = node_hash(&left, &h),
                None => break, // infallible: the stack holds one entry per set bit of size
            }
            s >>= 1;
        }
        self.stack.push(h);
        self.size += 1;
    }

    /// The tree head (RFC 9162 MTH) of the leaves pushed so far: O(log n).
    pub fn root(&self) -> Digest32 {
        let mut it = self.stack.iter().rev();
        let Some(last) = it.next() else {
            return empty_root();
        };
        it.fold(*last, |right, left| node_hash(left, &right))
    }
}

/// The largest power of two strictly smaller than `n` (`n >= 2`).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (u64::BITS - 1 - (n - 1).leading_zeros())
}

/// The tree head (RFC 9162 MTH) of `leaves`.
pub fn root(leaves: &[Digest32]) -> Digest32 {
    Frontier::from_leaves(leaves).root()
}

/// The inclusion proof (audit path, RFC 9162 §2.1.3.1) of leaf `index` in the tree of `leaves`.
pub fn inclusion_proof(leaves: &[Digest32], index: u64) -> Result<Vec<Digest32>, ProofError> {
    Ok(range_roots_of(leaves, &inclusion_ranges(index, leaves.len() as u64)?))
}

/// The consistency proof (RFC 9162 §2.1.4.1) from the tree of the first `first` leaves to
/// the tree of all of `leaves`. Empty when `first` is 0 or equals the size.
pub fn consistency_proof(leaves: &[Digest32], first: u64) -> Result<Vec<Digest32>, ProofError> {
    Ok(range_roots_of(leaves, &consistency_ranges(first, leaves.len() as u64)?))
}

fn range_roots_of(leaves: &[Digest32], ranges: &[Range<u64>]) -> Vec<Digest32> {
    // infallible: the ranges come from the proof definitions for this size, inside 0..len
    ranges.iter().map(|r| root(leaves.get(r.start as usize..r.end as usize).unwrap_or_default())).collect()
}

/// The leaf ranges whose tree heads make up the inclusion proof of `index` in a tree of
/// `size` leaves, in proof order (RFC 9162 §2.1.3.1 `PATH`). The ranges are disjoint, so
/// the proof can be computed in one pass over the leaves ([`RangeRoots`]).
pub fn inclusion_ranges(index: u64, size: u64) -> Result<Vec<Range<u64>>, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut out = Vec::new();
    path(index, 0..size, &mut out);
    Ok(out)
}

fn path(m: u64, d: Range<u64>, out: &mut Vec<Range<u64>>) {
    let n = d.end - d.start;
    if n <= 1 {
        return;
    }
    let k = split_point(n);
    let mid = d.start + k;
    if m - d.start < k {
        path(m, d.start..mid, out);
        out.push(mid..d.end);
    } else {
        path(m, mid..d.end, out);
        out.push(d.start..mid);
    }
}

/// The leaf ranges whose tree heads make up the consistency proof from size `first` to
/// size `second`, in proof order (RFC 9162 §2.1.4.1 `PROOF`/`SUBPROOF`); disjoint.
pub fn consistency_ranges(first: u64, second: u64) -> Result<Vec<Range<u64>>, ProofError> {
    if first > second {
        return Err(ProofError::SizesReversed { first, second });
    }
    let mut out = Vec::new();
    if first > 0 && first < second {
        subproof(first, 0..second, true, &mut out);
    }
    Ok(out)
}

fn subproof(m: u64, d: Range<u64>, whole: bool, out: &mut Vec<Range<u64>>) {
    let n = d.end - d.start;
    if m == n {
        if !whole {
            out.push(d);
        }
        return;
    }
    let k = split_point(n);
    let mid = d.start + k;
    if m <= k {
        subproof(m, d.start..mid, whole, out);
        out.push(mid..d.end);
    } else {
        subproof(m - k, mid..d.end, false, out);
        out.push(d.start..mid);
    }
}

/// Tree heads of disjoint leaf ranges, computed in one pass over the leaves with
/// O(log n) memory per range: how proofs are made from a log too large to load.
#[derive(Clone, Debug)]
pub struct RangeRoots {
    ranges: Vec<Range<u64>>,
    /// Indices into `ranges`, ordered by start.
    by_start: Vec<usize>,
    frontiers: Vec<Frontier>,
}

impl RangeRoots {
    /// Prepares to compute the heads of `ranges` (disjoint).
    pub fn new(ranges: Vec<Range<u64>>) -> Self {
        let mut by_start: Vec<usize> = (0..ranges.len()).collect();
        by_start.sort_by_key(|&i| ranges[i].start);
        let frontiers = vec![Frontier::new(); ranges.len()];
        RangeRoots { ranges, by_start, frontiers }
    }

    /// Feeds leaf `index` (leaves must come in index order).
    pub fn push(&mut self, index: u64, leaf: Digest32) {
        let pos = self.by_start.partition_point(|&i| self.ranges[i].start <= index);
        if let Some(&i) = pos.checked_sub(1).and_then(|p| self.by_start.get(p))
            && self.ranges[i].contains(&index)
        {
            self.frontiers[i].push(leaf);
        }
    }

    /// The heads, in the order the ranges were given.
    pub fn roots(&self) -> Vec<Digest32> {
        self.frontiers.iter().map(Frontier::root).collect()
    }
}

/// The root an inclusion proof leads to (RFC 9162 §2.1.3.2 steps 1 to 5).
pub fn root_from_inclusion_proof(index: u64, size: u64, leaf: &Digest32, proof: &[Digest32]) -> Result<Digest32, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let want = inclusion_proof_len(index, size);
    if proof.len() != want {
        return Err(ProofError::WrongLength { got: proof.len(), want });
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(ProofError::WrongLength { got: proof.len(), want });
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength { got: proof.len(), want });
    }
    Ok(r)
}

/// Verifies that `leaf` is at `index` in the tree of `size` leaves whose head is `root`.
pub fn verify_inclusion(index: u64, size: u64, leaf: &Digest32, proof: &[Digest32], root: &Digest32) -> Result<(), ProofError> {
    if root_from_inclusion_proof(index, size, leaf, proof)? == *root { Ok(()) } else { Err(ProofError::RootMismatch) }
}

/// The number of hashes in an inclusion proof for `index` in a tree of `size`.
fn inclusion_proof_len(index: u64, size: u64) -> usize {
    // The path has one hash per level where the node has a sibling: the inner levels
    // (below the point where index and size-1 diverge) always do; above it only the
    // levels where the right-edge node has a left sibling.
    let last = size - 1;
    let inner = (u64::BITS - (index ^ last).leading_zeros()) as usize;
    let border = (index >> inner).count_ones() as usize;
    inner + border
}

/// Verifies that the tree of `second` leaves with head `second_root` extends the tree of
/// `first` leaves with head `first_root` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(first: u64, second: u64, proof: &[Digest32], first_root: &Digest32, second_root: &Digest32) -> Result<(), ProofError> {
    if second < first {
        return Err(ProofError::SizesReversed { first, second });
    }
    if first == second {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength { got: proof.len(), want: 0 });
        }
        return if first_root == second_root { Ok(()) } else { Err(ProofError::RootMismatch) };
    }
    if first == 0 {
        // Every tree extends the empty tree; the proof is empty.
        return if proof.is_empty() { Ok(()) } else { Err(ProofError::WrongLength { got: proof.len(), want: 0 }) };
    }
    // Step 1: a non-trivial proof is never empty.
    let Some((head, rest)) = proof.split_first() else {
        return Err(ProofError::WrongLength { got: 0, want: 1 });
    };
    // Step 2: when `first` is a power of two its root is the first node of the path.
    let (start, path): (Digest32, &[Digest32]) = if first.is_power_of_two() { (*first_root, proof) } else { (*head, rest) };
    // Step 3 and 4.
    let (mut fnode, mut snode) = (first - 1, second - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    // Step 5 and 6.
    let (mut fr, mut sr) = (start, start);
    for c in path {
        if snode == 0 {
            return Err(ProofError::RootMismatch);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    // Step 7.
    if snode == 0 && fr == *first_root && sr == *second_root { Ok(()) } else { Err(ProofError::RootMismatch) }
}

/// Lowercase hex of a digest.
pub fn to_hex(d: &Digest32) -> String {
    hex::encode(d)
}

/// Parses a 64-character hex SHA-256 digest (either case).
pub fn from_hex(s: &str) -> Result<Digest32, ProofError> {
    let mut out = [0u8; 32];
    if s.len() != 64 || hex::decode_to_slice(s, &mut out).is_err() {
        return Err(ProofError::BadHex(s.chars().take(80).collect()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    //! Test vectors: `proof/verify_test.go` of github.com/transparency-dev/merkle (Google
    //! LLC, Apache-2.0; the vectors descend from certificate-transparency's and Trillian's
    //! RFC 6962 tests): eight leaf inputs, the roots of every prefix, inclusion proofs and
    //! consistency proofs, and the corruption probes applied to each proof.
    use super::*;
    use medicodax_wire::hash::leaf_hash_bytes;
    use proptest::prelude::*;

    fn dh(s: &str) -> Digest32 {
        from_hex(s).unwrap()
    }

    const LEAF_INPUTS: [&str; 8] = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];

    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    /// (leaf, 1-based as in the source; tree size; proof)
    const INCLUSION: [(u64, u64, &[&str]); 5] = [
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (3, 3, &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
        (
            2,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];

    const CONSISTENCY: [(u64, u64, &[&str]); 5] = [
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (2, 5, &["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e", "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
        (
            6,
            7,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];

    const SOME_HASH: &str = "abacaba000000000000000000000000000000000000000000060061e00123456";

    fn leaves() -> Vec<Digest32> {
        LEAF_INPUTS.iter().map(|h| leaf_hash_bytes(&hex::decode(h).unwrap())).collect()
    }

    fn hashes(v: &[&str]) -> Vec<Digest32> {
        v.iter().map(|h| dh(h)).collect()
    }

    #[test]
    fn empty_tree_root_is_sha256_of_nothing() {
        assert_eq!(to_hex(&root(&[])), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(Frontier::new().root(), empty_root());
    }

    #[test]
    fn roots_of_every_prefix_match_the_vectors() {
        let l = leaves();
        let mut f = Frontier::new();
        for (i, want) in ROOTS.iter().enumerate() {
            f.push(l[i]);
            assert_eq!(to_hex(&f.root()), *want, "frontier root of size {}", i + 1);
            assert_eq!(to_hex(&root(&l[..=i])), *want, "root of size {}", i + 1);
        }
    }

    #[test]
    fn inclusion_proofs_match_and_verify() {
        let l = leaves();
        for (leaf1, size, proof) in INCLUSION {
            let index = leaf1 - 1;
            let want = hashes(proof);
            let tree = &l[..size as usize];
            assert_eq!(inclusion_proof(tree, index).unwrap(), want, "proof for leaf {index} of {size}");
            let r = dh(ROOTS[size as usize - 1]);
            verify_inclusion(index, size, &l[index as usize], &want, &r).unwrap();
        }
    }

    /// The corruption probes of the source's `corruptInclusionProof`: every one must fail.
    #[test]
    fn corrupted_inclusion_proofs_fail() {
        let l = leaves();
        let some = dh(SOME_HASH);
        for (leaf1, size, proof) in INCLUSION {
            let index = leaf1 - 1;
            let p = hashes(proof);
            let r = dh(ROOTS[size as usize - 1]);
            let leaf = l[index as usize];
            let mut probes: Vec<(String, u64, u64, Digest32, Vec<Digest32>, Digest32)> = vec![
                ("index+1".into(), index + 1, size, leaf, p.clone(), r),
                ("index^2".into(), index ^ 2, size, leaf, p.clone(), r),
                ("size*2".into(), index, size * 2, leaf, p.clone(), r),
                ("size/2".into(), index, size / 2, leaf, p.clone(), r),
                ("wrong leaf".into(), index, size, leaf_hash_bytes(b"WrongLeaf"), p.clone(), r),
                ("empty root".into(), index, size, leaf, p.clone(), empty_root()),
                ("random root".into(), index, size, leaf, p.clone(), some),
                ("trailing root".into(), index, size, leaf, [p.clone(), vec![r]].concat(), r),
                ("preceding root".into(), index, size, leaf, [vec![r], p.clone()].concat(), r),
            ];
            if index > 0 {
                probes.push(("index-1".into(), index - 1, size, leaf, p.clone(), r));
            }
            for i in 0..p.len() {
                let mut w = p.clone();
                w[i][0] ^= 8;
                probes.push((format!("modified proof[{i}] bit 3"), index, size, leaf, w, r));
            }
            if !p.is_empty() {
                probes.push(("removed component".into(), index, size, leaf, p[..p.len() - 1].to_vec(), r));
            }
            if p.len() > 1 {
                probes.push(("inserted component".into(), index, size, leaf, [vec![p[0], some], p[1..].to_vec()].concat(), r));
            }
            for (desc, i, s, lf, pr, rt) in probes {
                assert!(verify_inclusion(i, s, &lf, &pr, &rt).is_err(), "probe {desc} for leaf {index} of {size} verified");
            }
        }
    }

    #[test]
    fn single_entry_and_degenerate_inclusion() {
        let h = leaf_hash_bytes(b"data");
        verify_inclusion(0, 1, &h, &[], &h).unwrap();
        assert!(verify_inclusion(0, 1, &h, &[], &empty_root()).is_err());
        for (i, s) in [(0, 0), (1, 0), (2, 1)] {
            assert!(verify_inclusion(i, s, &dh(SOME_HASH), &[], &empty_root()).is_err(), "{i}/{s}");
        }
        assert_eq!(inclusion_proof(&[], 0), Err(ProofError::IndexOutOfRange { index: 0, size: 0 }));
    }

    #[test]
    fn consistency_proofs_match_and_verify() {
        let l = leaves();
        for (s1, s2, proof) in CONSISTENCY {
            let want = hashes(proof);
            assert_eq!(consistency_proof(&l[..s2 as usize], s1).unwrap(), want, "proof {s1} -> {s2}");
            let (r1, r2) = (dh(ROOTS[s1 as usize - 1]), dh(ROOTS[s2 as usize - 1]));
            verify_consistency(s1, s2, &want, &r1, &r2).unwrap();
        }
    }

    /// The source's trivial-size table of `TestVerifyConsistency`.
    #[test]
    fn consistency_trivial_sizes() {
        let (a, b) = (sha256(b"don't care 1"), sha256(b"don't care 2"));
        let e = empty_root();
        let cases: [(u64, u64, Digest32, Digest32, Vec<Digest32>, bool); 13] = [
            (0, 0, a, b, vec![], false),
            (1, 1, a, b, vec![], false),
            (0, 0, a, a, vec![], true),
            (0, 1, a, b, vec![], true),
            (1, 1, b, b, vec![], true),
            (1, 0, a, b, vec![], false),
            (2, 1, a, b, vec![], false),
            (1, 2, a, b, vec![], false),
            (0, 0, e, b, vec![], false),
            (1, 1, e, b, vec![], false),
            (0, 0, e, e, vec![e], false),
            (0, 1, e, e, vec![e], false),
            (1, 1, e, e, vec![e], false),
        ];
        for (s1, s2, r1, r2, p, ok) in cases {
            assert_eq!(verify_consistency(s1, s2, &p, &r1, &r2).is_ok(), ok, "{s1} -> {s2}");
        }
    }

    /// The corruption probes of the source's `corruptConsistencyProof`.
    #[test]
    fn corrupted_consistency_proofs_fail() {
        for (s1, s2, proof) in CONSISTENCY {
            let p = hashes(proof);
            if p.is_empty() {
                continue;
            }
            let (r1, r2) = (dh(ROOTS[s1 as usize - 1]), dh(ROOTS[s2 as usize - 1]));
            let wrong = sha256(b"WrongRoot");
            let mut probes: Vec<(String, u64, u64, Digest32, Digest32, Vec<Digest32>)> = vec![
                ("size1-1".into(), s1 - 1, s2, r1, r2, p.clone()),
                ("size1+1".into(), s1 + 1, s2, r1, r2, p.clone()),
                ("size1^2".into(), s1 ^ 2, s2, r1, r2, p.clone()),
                ("size2*2".into(), s1, s2 * 2, r1, r2, p.clone()),
                ("size2/2".into(), s1, s2 / 2, r1, r2, p.clone()),
                ("wrong root1".into(), s1, s2, wrong, r2, p.clone()),
                ("wrong root2".into(), s1, s2, r1, wrong, p.clone()),
                ("swapped roots".into(), s1, s2, r2, r1, p.clone()),
                ("empty proof".into(), s1, s2, r1, r2, vec![]),
                ("trailing root1".into(), s1, s2, r1, r2, [p.clone(), vec![r1]].concat()),
                ("trailing root2".into(), s1, s2, r1, r2, [p.clone(), vec![r2]].concat()),
                ("preceding root1".into(), s1, s2, r1, r2, [vec![r1], p.clone()].concat()),
                ("preceding root2".into(), s1, s2, r1, r2, [vec![r2], p.clone()].concat()),
                ("preceding proof[0]".into(), s1, s2, r1, r2, [vec![p[0]], p.clone()].concat()),
                ("truncated proof".into(), s1, s2, r1, r2, p[..p.len() - 1].to_vec()),
            ];
            for i in 0..p.len() {
                let mut w = p.clone();
                w[i][0] ^= 16;
                probes.push((format!("modified proof[{i}] bit 4"), s1, s2, r1, r2, w));
            }
            for (desc, a, b, x, y, pr) in probes {
                assert!(verify_consistency(a, b, &pr, &x, &y).is_err(), "probe {desc} for {s1} -> {s2} verified");
            }
        }
    }

    #[test]
    fn hex_parsing_is_strict() {
        assert!(from_hex("abc").is_err());
        assert!(from_hex(&"g".repeat(64)).is_err());
        assert_eq!(from_hex(ROOTS[0]).unwrap(), dh(ROOTS[0]));
    }

    fn arb_leaves(max: usize) -> impl Strategy<Value = Vec<Digest32>> {
        prop::collection::vec(any::<[u8; 32]>(), 1..max)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn frontier_matches_recursive_root(l in arb_leaves(130)) {
            // The recursive MTH, written independently of the frontier.
            fn mth(d: &[Digest32]) -> Digest32 {
                match d.len() {
                    0 => empty_root(),
                    1 => d[0],
                    n => { let k = split_point(n as u64) as usize; node_hash(&mth(&d[..k]), &mth(&d[k..])) }
                }
            }
            let mut f = Frontier::new();
            for (i, x) in l.iter().enumerate() {
                f.push(*x);
                prop_assert_eq!(f.root(), mth(&l[..=i]));
                prop_assert_eq!(f.size(), i as u64 + 1);
            }
        }

        #[test]
        fn every_inclusion_proof_verifies_and_a_flipped_bit_fails(l in arb_leaves(70), bit in 0usize..256) {
            let r = root(&l);
            let n = l.len() as u64;
            for i in 0..n {
                let p = inclusion_proof(&l, i).unwrap();
                prop_assert_eq!(p.len(), inclusion_proof_len(i, n));
                prop_assert!(verify_inclusion(i, n, &l[i as usize], &p, &r).is_ok());
                let mut leaf = l[i as usize];
                leaf[bit / 8] ^= 1 << (bit % 8);
                prop_assert!(verify_inclusion(i, n, &leaf, &p, &r).is_err());
                let mut rr = r;
                rr[bit / 8] ^= 1 << (bit % 8);
                prop_assert!(verify_inclusion(i, n, &l[i as usize], &p, &rr).is_err());
                for j in 0..p.len() {
                    let mut q = p.clone();
                    q[j][bit / 8] ^= 1 << (bit % 8);
                    prop_assert!(verify_inclusion(i, n, &l[i as usize], &q, &r).is_err());
                }
            }
        }

        #[test]
        fn consistency_between_any_two_sizes_verifies_and_a_flipped_bit_fails(l in arb_leaves(70), bit in 0usize..256) {
            let n = l.len();
            let r2 = root(&l);
            for m in 0..=n {
                let r1 = root(&l[..m]);
                let p = consistency_proof(&l, m as u64).unwrap();
                prop_assert!(verify_consistency(m as u64, n as u64, &p, &r1, &r2).is_ok());
                if m > 0 && m < n {
                    let mut bad1 = r1;
                    bad1[bit / 8] ^= 1 << (bit % 8);
                    prop_assert!(verify_consistency(m as u64, n as u64, &p, &bad1, &r2).is_err());
                    for j in 0..p.len() {
                        let mut q = p.clone();
                        q[j][bit / 8] ^= 1 << (bit % 8);
                        prop_assert!(verify_consistency(m as u64, n as u64, &q, &r1, &r2).is_err());
                    }
                }
            }
        }

        #[test]
        fn one_pass_range_roots_equal_the_slice_proofs(l in arb_leaves(70), which in any::<prop::sample::Index>()) {
            let n = l.len() as u64;
            let i = which.index(l.len()) as u64;
            let mut inc = RangeRoots::new(inclusion_ranges(i, n).unwrap());
            let mut con = RangeRoots::new(consistency_ranges(i, n).unwrap());
            for (k, leaf) in l.iter().enumerate() {
                inc.push(k as u64, *leaf);
                con.push(k as u64, *leaf);
            }
            prop_assert_eq!(inc.roots(), inclusion_proof(&l, i).unwrap());
            prop_assert_eq!(con.roots(), consistency_proof(&l, i).unwrap());
        }

        #[test]
        fn a_changed_leaf_breaks_consistency(l in arb_leaves(40), which in any::<prop::sample::Index>()) {
            let n = l.len();
            if n >= 2 {
                let i = which.index(n - 1); // a leaf inside the old tree [0, n-1)
                let m = n - 1;
                let r1 = root(&l[..m]);
                let mut changed = l.clone();
                changed[i][0] ^= 1;
                let p = consistency_proof(&changed, m as u64).unwrap();
                prop_assert!(verify_consistency(m as u64, n as u64, &p, &r1, &root(&changed)).is_err());
            }
        }
    }
}
