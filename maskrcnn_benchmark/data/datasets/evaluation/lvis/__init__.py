from .lvis_eval import do_lvis_evaluation


def lvis_evaluation(
    dataset,
    predictions,
    output_folder,
    box_only=False,
    iou_types=("bbox",),
    expected_results=(),
    expected_results_sigma_tol=4,
    max_dets=300,
    train_annotations=None,
    category_groups=None,
    category_ids=None,
    fixed_ap_dets_per_class=0,
    inference_dets_per_img=None,
):
    """Evaluate predictions on an LVISDataset with the LVIS protocol; see do_lvis_evaluation."""
    return do_lvis_evaluation(
        dataset=dataset,
        predictions=predictions,
        output_folder=output_folder,
        iou_types=iou_types,
        box_only=box_only,
        max_dets=max_dets,
        train_annotations=train_annotations,
        category_groups=category_groups,
        category_ids=category_ids,
        fixed_ap_dets_per_class=fixed_ap_dets_per_class,
        inference_dets_per_img=inference_dets_per_img,
        expected_results=expected_results,
        expected_results_sigma_tol=expected_results_sigma_tol,
    )
