"""keras_facemargin.evaluation"""
