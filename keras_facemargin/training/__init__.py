"""keras_facemargin.training"""
