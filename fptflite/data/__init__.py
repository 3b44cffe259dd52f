"""COCO-format data: synthetic generator, annotation reading, geometry and tf.data pipelines."""
