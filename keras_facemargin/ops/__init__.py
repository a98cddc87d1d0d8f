"""keras_facemargin.ops"""
