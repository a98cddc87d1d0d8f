"""keras_facemargin.data"""
