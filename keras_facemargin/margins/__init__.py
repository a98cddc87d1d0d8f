"""keras_facemargin.margins"""
