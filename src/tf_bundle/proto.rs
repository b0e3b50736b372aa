//! The protobuf messages a tensor bundle stores, written from the field
//! numbers of TensorFlow's `tensor_bundle.proto`, `tensor_shape.proto`,
//! `tensor_slice.proto` and `trackable_object_graph.proto`, and the part of
//! a SavedModel's `saved_object_graph.proto` that TF 2.0-2.4 kept Keras's
//! metadata in (no `protoc`).

/// The value under the empty key: how the bundle was written.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BundleHeaderProto {
    #[prost(int32, tag = "1")]
    pub num_shards: i32,
    /// 0 little-endian, 1 big-endian.
    #[prost(int32, tag = "2")]
    pub endianness: i32,
}

/// Where one tensor (or one saved slice of it) is.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BundleEntryProto {
    /// A TensorFlow `DataType` number.
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
    #[prost(int32, tag = "3")]
    pub shard_id: i32,
    #[prost(int64, tag = "4")]
    pub offset: i64,
    #[prost(int64, tag = "5")]
    pub size: i64,
    /// Masked CRC-32C of the tensor's bytes.
    #[prost(fixed32, tag = "6")]
    pub crc32c: u32,
    /// For a tensor saved in slices: the slices, each an entry of its own.
    #[prost(message, repeated, tag = "7")]
    pub slices: Vec<TensorSliceProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "2")]
    pub dim: Vec<Dim>,
    #[prost(bool, tag = "3")]
    pub unknown_rank: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Dim {
    #[prost(int64, tag = "1")]
    pub size: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorSliceProto {
    #[prost(message, repeated, tag = "1")]
    pub extent: Vec<Extent>,
}

/// One dimension of a slice; no length means the whole dimension.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Extent {
    #[prost(int64, tag = "1")]
    pub start: i64,
    #[prost(int64, optional, tag = "2")]
    pub length: Option<i64>,
}

/// The `_CHECKPOINTABLE_OBJECT_GRAPH` of an object-based checkpoint.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TrackableObjectGraph {
    #[prost(message, repeated, tag = "1")]
    pub nodes: Vec<TrackableObject>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TrackableObject {
    #[prost(message, repeated, tag = "1")]
    pub children: Vec<ObjectReference>,
    #[prost(message, repeated, tag = "2")]
    pub attributes: Vec<SerializedTensor>,
    #[prost(message, repeated, tag = "3")]
    pub slot_variables: Vec<SlotVariableReference>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ObjectReference {
    #[prost(int32, tag = "1")]
    pub node_id: i32,
    #[prost(string, tag = "2")]
    pub local_name: String,
}

/// One saved value of an object: for a variable, `VARIABLE_VALUE`, with
/// the variable's name (`full_name`) and its key in the bundle.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SerializedTensor {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub full_name: String,
    #[prost(string, tag = "3")]
    pub checkpoint_key: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SlotVariableReference {
    #[prost(int32, tag = "1")]
    pub original_variable_node_id: i32,
    #[prost(string, tag = "2")]
    pub slot_name: String,
    #[prost(int32, tag = "3")]
    pub slot_variable_node_id: i32,
}

/// tf-keras's `keras_metadata.pb` beside a SavedModel (from tf-keras's
/// `saved_metadata.proto`): one JSON description per saved Keras object.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SavedMetadata {
    #[prost(message, repeated, tag = "1")]
    pub nodes: Vec<SavedObject>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SavedObject {
    #[prost(int32, tag = "2")]
    pub node_id: i32,
    /// `root`, `root.layer_with_weights-0`, ...
    #[prost(string, tag = "3")]
    pub node_path: String,
    /// `_tf_keras_network`, `_tf_keras_layer`, ...
    #[prost(string, tag = "4")]
    pub identifier: String,
    /// JSON: `class_name`, `name`, `config`, ...
    #[prost(string, tag = "5")]
    pub metadata: String,
}

/// A SavedModel's object graph (`MetaGraphDef.object_graph_def`, field 7
/// of the first of `SavedModel.meta_graphs`, field 2): only what names
/// Keras objects is declared, so prost skips the rest without keeping it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SavedObjectGraph {
    #[prost(message, repeated, tag = "1")]
    pub nodes: Vec<SavedGraphObject>,
}

/// `tensorflow.SavedObject` (named apart from the `keras_metadata.pb`
/// message above).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SavedGraphObject {
    #[prost(message, repeated, tag = "1")]
    pub children: Vec<ObjectReference>,
    #[prost(message, optional, tag = "4")]
    pub user_object: Option<SavedUserObject>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SavedUserObject {
    /// `_tf_keras_layer`, `_tf_keras_network`, ...
    #[prost(string, tag = "1")]
    pub identifier: String,
    /// The JSON `keras_metadata.pb` holds since TF 2.5; empty from then on.
    #[prost(string, tag = "3")]
    pub metadata: String,
}
