"""Python code generated from TensorFlow Lite's official ``metadata_schema.fbs`` (see README.md).

Do not edit the generated module; regenerate it with the command in README.md.
"""
