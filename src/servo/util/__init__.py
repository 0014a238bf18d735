"""Utilities that know nothing of models or servers: file formats shared by several parts of
servo (`tfrecord`: TensorFlow's record files, read by warm-up and written by request logging)."""
