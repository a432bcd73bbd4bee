// -----------------------------------------------------------------------------
// File: storage/hostile_metadata_testutil.h
// -----------------------------------------------------------------------------
//
// Generators of `.metadata` pickles shaped as CPython's pickler writes them
// (protocol 2 with memo: every str and global is memoized once and later
// references use BINGET / LONG_BINGET), for the decoded-size budget tests
// (issue 9): hostile ones whose shared values expand far beyond the file,
// and realistic large ones that must still decode.
#ifndef DCP_STORAGE_HOSTILE_METADATA_TESTUTIL_H_
#define DCP_STORAGE_HOSTILE_METADATA_TESTUTIL_H_

#include <cstddef>
#include <string>

namespace dcp::test {

// The reported case: `storage_data` holds `entries` MetadataIndex ->
// _StorageInfo entries (offsets (0,), (1,), ...) whose fqn is one memoized
// str of `key_bytes` bytes, also the only `state_dict_metadata` key (a
// BytesStorageMetadata). With 20,000 entries and a 1 MiB key the file is
// about 1.9 MB (the reported one was 1.7 MB) and decodes to 20 GiB of fqn
// copies.
std::string SharedKeyMetadataPickle(int entries, size_t key_bytes);

// `tensors` TensorStorageMetadata entries (short distinct keys) that all
// share one memoized list of `chunks` ChunkStorageMetadata: each key's
// chunk list is a copy once decoded. No storage_data.
std::string SharedChunksMetadataPickle(int tensors, int chunks);

// A legitimate large `.metadata` as PyTorch's default planner writes it for
// `keys` tensors with fqns of about `name_bytes` bytes, each of
// `chunks_per_key` row chunks: state_dict_metadata, planner_data (fqn ->
// path tuple of its dotted parts) and storage_data, with each fqn memoized
// once and referenced from planner_data and every MetadataIndex, and the
// relative path of the one data file memoized and referenced from every
// _StorageInfo.
std::string RealisticMetadataPickle(int keys, size_t name_bytes,
                                    int chunks_per_key);

// The fqn RealisticMetadataPickle gives key `i`.
std::string RealisticFqn(int i, size_t name_bytes);

}  // namespace dcp::test

#endif  // DCP_STORAGE_HOSTILE_METADATA_TESTUTIL_H_
