"""keras_facemargin.layers"""
