"""keras_facemargin.export"""
