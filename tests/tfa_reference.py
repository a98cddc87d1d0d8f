"""A port of tensorflow-addons' NumPy references for its triplet losses, FOR CHECKING ONLY.

Written by reading ``tensorflow_addons/losses/tests/triplet_test.py`` (Apache-2.0;
``pairwise_distance_np``, ``angular_distance_np``, ``triplet_semihard_loss_np``,
``triplet_hard_loss_np``), the loops tensorflow-addons tests its ``TripletSemiHardLoss`` and
``TripletHardLoss`` against. tensorflow-addons itself cannot be installed with TF 2.21.
Defaults of the ported losses (``tensorflow_addons/losses/triplet.py``): ``margin=1.0``,
``distance_metric="L2"``, and for the hard loss ``soft=False``.
"""

import numpy as np


def pairwise_distance_np(feature, squared=False):
    triu = np.triu_indices(feature.shape[0], 1)
    upper_tri_pdists = np.linalg.norm(feature[triu[1]] - feature[triu[0]], axis=1)
    if squared:
        upper_tri_pdists **= 2.0
    num_data = feature.shape[0]
    pairwise_distances = np.zeros((num_data, num_data))
    pairwise_distances[np.triu_indices(num_data, 1)] = upper_tri_pdists
    pairwise_distances = (pairwise_distances + pairwise_distances.T
                          - np.diag(pairwise_distances.diagonal()))
    return pairwise_distances


def squared_l_2_dists(embs):
    return pairwise_distance_np(embs, True)


def l_2_dists(embs):
    return pairwise_distance_np(embs, False)


def angular_distance_np(feature):
    """tensorflow-addons' "angular": 1 - cosine similarity."""
    normed = feature / np.linalg.norm(feature, ord=2, axis=1, keepdims=True)
    cosine_similarity = normed @ normed.T
    return 1 - cosine_similarity


DIST_FUNCS = {"L2": l_2_dists, "squared-L2": squared_l_2_dists, "angular": angular_distance_np}


def triplet_semihard_loss_np(labels, embedding, margin=1.0, dist_func=l_2_dists):
    num_data = embedding.shape[0]
    labels_reshaped = np.reshape(labels.astype(np.float32), (labels.shape[0], 1))
    adjacency = np.equal(labels_reshaped, labels_reshaped.T)
    pdist_matrix = dist_func(embedding)
    loss_np = 0.0
    num_positives = 0.0
    for i in range(num_data):
        for j in range(num_data):
            if adjacency[i][j] > 0.0 and i != j:
                num_positives += 1.0
                pos_distance = pdist_matrix[i][j]
                neg_distances = []
                for k in range(num_data):
                    if adjacency[i][k] == 0:
                        neg_distances.append(pdist_matrix[i][k])
                neg_distances.sort()
                chosen_neg_distance = neg_distances[0]
                for m in range(len(neg_distances)):
                    chosen_neg_distance = neg_distances[m]
                    if chosen_neg_distance > pos_distance:
                        break
                loss_np += np.maximum(0.0, margin - chosen_neg_distance + pos_distance)
    loss_np /= num_positives
    return loss_np


def triplet_hard_loss_np(labels, embedding, margin=1.0, dist_func=l_2_dists, soft=False):
    num_data = embedding.shape[0]
    labels_reshaped = np.reshape(labels.astype(np.float32), (labels.shape[0], 1))
    adjacency = np.equal(labels_reshaped, labels_reshaped.T)
    pdist_matrix = dist_func(embedding)
    loss_np = 0.0
    for i in range(num_data):
        pos_distances = []
        neg_distances = []
        for j in range(num_data):
            if adjacency[i][j] == 0:
                neg_distances.append(pdist_matrix[i][j])
            if adjacency[i][j] > 0.0 and i != j:
                pos_distances.append(pdist_matrix[i][j])
        # if there are no positive pairs, distance is 0
        if len(pos_distances) == 0:
            pos_distances.append(0)
        neg_distances.sort()
        min_neg_distance = neg_distances[0]
        pos_distances.sort(reverse=True)
        max_pos_distance = pos_distances[0]
        if soft:
            loss_np += np.log1p(np.exp(max_pos_distance - min_neg_distance))
        else:
            loss_np += np.maximum(0.0, max_pos_distance - min_neg_distance + margin)
    loss_np /= num_data
    return loss_np
