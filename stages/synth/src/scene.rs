//! One synthetic face image: pose, look and placement are sampled, the head is meshed,
//! rasterised and shaded over a cluttered background, occluders and camera effects are added,
//! and the landmarks are projected with their self-occlusion visibility.

use std::f32::consts::PI;

use image::RgbImage;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::SynthConfig;
use super::model::{
    Camera, FaceModel, FaceParams, Layout, Pose, SurfacePoint, V2, V3, dot, gauss2, lerp, mat_vec,
    normalize_or, smoothstep,
};
use super::raster::{Frame, GBuffer, Material, Mesh, Vertex, fbm2, grid_normals, value_noise};

/// What to render.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FaceRequest {
    pub layout: Layout,
    /// The challenging subset: harder poses, more occlusion, harsher imaging.
    pub hard: bool,
}

/// A rendered face and its ground truth.
pub(crate) struct RenderedFace {
    pub image: RgbImage,
    /// x0, y0, x1, y1, … in the internal pixel convention.
    pub landmarks: Vec<f32>,
    /// Not hidden by the head itself.
    pub visible: Vec<bool>,
    /// Degrees: yaw, pitch, roll.
    pub pose_deg: [f32; 3],
    /// Square face box in whole pixels: left column, top row, side.
    pub face_box: [i32; 3],
    /// Rendered in grey levels (AFLW's `bw` images).
    pub grey: bool,
}

/// Depth-test tolerance (head units) for landmarks on the surface, and for contour points, whose
/// surface is seen edge-on so that the pixel centre may land on a much nearer part of it.
const DEPTH_TOL: f32 = 0.04;
const DEPTH_TOL_CONTOUR: f32 = 0.15;

/// Render one face with all randomness from `rng`.
pub(crate) fn render_face(
    config: &SynthConfig,
    req: FaceRequest,
    rng: &mut ChaCha8Rng,
) -> RenderedFace {
    let model = FaceModel::new(FaceParams::sample(rng, if req.hard { 0.8 } else { 0.3 }));
    let pose_deg = sample_pose(config, req.hard, rng);
    let pose = Pose {
        yaw: pose_deg[0].to_radians(),
        pitch: pose_deg[1].to_radians(),
        roll: pose_deg[2].to_radians(),
    };
    let (w, h) = sample_size(config, rng);
    let (cam, points) = place_camera(config, &model, &pose, req.layout, (w, h), rng);
    let look = Look::sample(rng, req.hard);

    let mut frame = Frame::new(w as usize, h as usize);
    paint_background(&mut frame, &look, cam.scale, rng);
    let body_pose = Pose {
        yaw: 0.3 * pose.yaw,
        pitch: 0.2 * pose.pitch,
        roll: 0.3 * pose.roll,
    };
    let mesh = build_mesh(
        &model,
        &look,
        &cam,
        &Camera {
            rot: body_pose.rotation(),
            ..cam
        },
    );
    let mut gbuf = GBuffer::new(w as usize, h as usize);
    gbuf.rasterise(&mesh);
    shade(&mut frame, &gbuf, &mesh, &model, &look);

    let mut landmarks = Vec::with_capacity(points.len() * 2);
    let mut visible = Vec::with_capacity(points.len());
    for sp in &points {
        let q = cam.project(sp.p);
        landmarks.extend([q[0], q[1]]);
        let tol = if sp.contour {
            DEPTH_TOL_CONTOUR
        } else {
            DEPTH_TOL
        };
        visible.push(gbuf.depth_at(q[0], q[1]).is_none_or(|z| z - q[2] <= tol));
    }
    let face_box = face_box(&cam, &model, &points);

    let occlusion_p = if req.hard {
        (config.occlusion_probability * 2.5).min(0.9)
    } else {
        config.occlusion_probability
    };
    if rng.r#gen::<f32>() < occlusion_p {
        paint_occluders(&mut frame, &face_box, &look, req.hard, rng);
    }
    let grey = finish(&mut frame, &cam, req.hard, rng);
    let raw = frame.to_rgb8(
        if req.hard {
            rng.gen_range(0.004..0.03)
        } else {
            rng.gen_range(0.002..0.016)
        },
        rng.r#gen(),
    );
    let image = RgbImage::from_raw(w, h, raw).expect("frame holds width × height RGB pixels");
    RenderedFace {
        image,
        landmarks,
        visible,
        pose_deg,
        face_box,
        grey,
    }
}

/// Laplace(0, b) sample.
fn laplace(rng: &mut ChaCha8Rng, b: f32) -> f32 {
    let u: f32 = rng.gen_range(-0.5f32..0.5);
    -b * u.signum() * (1.0 - 2.0 * u.abs()).max(1e-7).ln()
}

fn normal(rng: &mut ChaCha8Rng, sd: f32) -> f32 {
    sd * rng.sample::<f32, _>(rand_distr::StandardNormal)
}

/// Yaw, pitch, roll in degrees: mostly near-frontal with a heavy tail of large yaws, as in real
/// collections; the challenging subset draws yaw uniformly half of the time.
fn sample_pose(config: &SynthConfig, hard: bool, rng: &mut ChaCha8Rng) -> [f32; 3] {
    let max_yaw = config.max_yaw_deg;
    let mut yaw = 0.0;
    for _ in 0..8 {
        yaw = if hard && rng.gen_bool(0.5) {
            rng.gen_range(-1.0..=1.0) * max_yaw
        } else if rng.gen_bool(0.55) {
            normal(rng, 10.0)
        } else {
            laplace(rng, max_yaw / 3.5)
        };
        if yaw.abs() <= max_yaw {
            break;
        }
    }
    let spread = if hard { 2.0 } else { 3.0 };
    let pitch = normal(rng, config.max_pitch_deg / spread);
    let roll = normal(rng, config.max_roll_deg / (spread + 0.5));
    [
        yaw.clamp(-max_yaw, max_yaw),
        pitch.clamp(-config.max_pitch_deg, config.max_pitch_deg),
        roll.clamp(-config.max_roll_deg, config.max_roll_deg),
    ]
}

/// Image size within the configured side range, aspect ratio within [2/3, 3/2].
fn sample_size(config: &SynthConfig, rng: &mut ChaCha8Rng) -> (u32, u32) {
    let (lo, hi) = config.image_size;
    let w = rng.gen_range(lo..=hi);
    let h_lo = lo.max((w as f32 / 1.5).ceil() as u32).min(hi);
    let h_hi = hi.min((w as f32 * 1.5).floor() as u32).max(h_lo);
    (w, rng.gen_range(h_lo..=h_hi))
}

/// Choose perspective, scale and position so that every landmark and the forehead lie inside
/// the image with a margin; returns the camera and the landmarks it sees.
fn place_camera(
    config: &SynthConfig,
    model: &FaceModel,
    pose: &Pose,
    layout: Layout,
    (w, h): (u32, u32),
    rng: &mut ChaCha8Rng,
) -> (Camera, Vec<SurfacePoint>) {
    let (w, h) = (w as f32, h as f32);
    let min_side = w.min(h);
    let mut cam = Camera {
        rot: pose.rotation(),
        pivot: [0.0, 0.4, -0.25],
        distance: rng.gen_range(5.0..25.0),
        scale: 1.0,
        cx: 0.0,
        cy: 0.0,
    };
    let points = model.landmarks(layout, &cam);
    let forehead = model.front_point([0.0, model.p.brow_y - 0.45]);
    let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    for p in points.iter().map(|s| s.p).chain([forehead]) {
        let q = cam.project(p);
        (x0, y0, x1, y1) = (x0.min(q[0]), y0.min(q[1]), x1.max(q[0]), y1.max(q[1]));
    }
    let margin = (0.03 * min_side).max(2.0);
    let (f_lo, f_hi) = config.face_fraction;
    let wanted = rng.gen_range(f_lo..=f_hi) * min_side / 1.75;
    let fit =
        ((w - 2.0 * margin) / (x1 - x0).max(1e-3)).min((h - 2.0 * margin) / (y1 - y0).max(1e-3));
    cam.scale = wanted.min(fit);
    let s = cam.scale;
    let pick = |rng: &mut ChaCha8Rng, lo: f32, hi: f32| {
        if lo < hi {
            rng.gen_range(lo..hi)
        } else {
            0.5 * (lo + hi)
        }
    };
    cam.cx = pick(rng, margin - s * x0, w - margin - s * x1);
    cam.cy = pick(rng, margin - s * y0, h - margin - s * y1);
    (cam, points)
}

/// Square box around the landmarks and forehead, 1.1× the larger side, in whole pixels.
fn face_box(cam: &Camera, model: &FaceModel, points: &[SurfacePoint]) -> [i32; 3] {
    let forehead = model.front_point([0.0, model.p.brow_y - 0.45]);
    let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    for p in points.iter().map(|s| s.p).chain([forehead]) {
        let q = cam.project(p);
        (x0, y0, x1, y1) = (x0.min(q[0]), y0.min(q[1]), x1.max(q[0]), y1.max(q[1]));
    }
    let side = (1.1 * (x1 - x0).max(y1 - y0)).round().max(1.0);
    let (cx, cy) = (0.5 * (x0 + x1), 0.5 * (y0 + y1));
    [
        (cx - 0.5 * side).round() as i32,
        (cy - 0.5 * side).round() as i32,
        side as i32,
    ]
}

/// Skin, hair, clothes, light and the noise seed of one face.
struct Look {
    skin: [f32; 3],
    lip: [f32; 3],
    hair: [f32; 3],
    brow: [f32; 3],
    iris: [f32; 3],
    cloth: [f32; 3],
    cloth2: [f32; 3],
    stripes: f32,
    has_hair: bool,
    /// Hairline height at the forehead, above the ears, and at the nape.
    hairline: f32,
    hair_side: f32,
    hair_back: f32,
    /// Thickness of the hair volume on the skull.
    hair_volume: f32,
    blush: f32,
    eyeshadow: f32,
    stubble: f32,
    light: V3,
    fill: V3,
    ambient: f32,
    diffuse: f32,
    fill_k: f32,
    light_col: [f32; 3],
    seed: u32,
}

const SKIN_TONES: [[f32; 3]; 7] = [
    [0.95, 0.80, 0.70],
    [0.90, 0.72, 0.60],
    [0.82, 0.62, 0.49],
    [0.72, 0.53, 0.40],
    [0.60, 0.42, 0.30],
    [0.45, 0.31, 0.22],
    [0.33, 0.22, 0.16],
];

const HAIR_COLOURS: [[f32; 3]; 7] = [
    [0.06, 0.05, 0.04],
    [0.16, 0.10, 0.06],
    [0.32, 0.21, 0.12],
    [0.55, 0.40, 0.22],
    [0.80, 0.66, 0.42],
    [0.45, 0.20, 0.09],
    [0.62, 0.61, 0.60],
];

const IRIS_COLOURS: [[f32; 3]; 5] = [
    [0.30, 0.17, 0.08],
    [0.18, 0.10, 0.05],
    [0.25, 0.40, 0.55],
    [0.30, 0.40, 0.22],
    [0.45, 0.35, 0.18],
];

fn jitter3(rng: &mut ChaCha8Rng, c: [f32; 3], amount: f32) -> [f32; 3] {
    let k = 1.0 + rng.gen_range(-amount..amount);
    c.map(|v| (v * k + rng.gen_range(-amount..amount) * 0.3).clamp(0.0, 1.0))
}

/// A palette entry, jittered.
fn pick(rng: &mut ChaCha8Rng, palette: &[[f32; 3]], amount: f32) -> [f32; 3] {
    let c = palette[rng.gen_range(0..palette.len())];
    jitter3(rng, c, amount)
}

fn random_colour(rng: &mut ChaCha8Rng) -> [f32; 3] {
    [rng.r#gen(), rng.r#gen(), rng.r#gen()]
}

impl Look {
    fn sample(rng: &mut ChaCha8Rng, hard: bool) -> Self {
        let skin = pick(rng, &SKIN_TONES, 0.06);
        let hair = pick(rng, &HAIR_COLOURS, 0.1);
        let lip_tint = [
            rng.gen_range(0.80..0.95),
            rng.gen_range(0.45..0.62),
            rng.gen_range(0.48..0.62),
        ];
        let lipstick = rng.gen_bool(0.15);
        let lip = if lipstick {
            [
                rng.gen_range(0.5..0.8),
                rng.gen_range(0.05..0.2),
                rng.gen_range(0.1..0.3),
            ]
        } else {
            [0, 1, 2].map(|c| skin[c] * lip_tint[c])
        };
        let brow = hair.map(|v| (v * 0.75).min(0.45));
        // Light mostly from above and in front; the challenging subset gets harsh side light.
        let side = if hard { 1.2 } else { 0.7 };
        let light = normalize_or(
            [
                rng.gen_range(-side..side),
                rng.gen_range(-0.9..0.25),
                rng.gen_range(0.35..1.0),
            ],
            [0.0, 0.0, 1.0],
        );
        let fill = normalize_or([-light[0], rng.gen_range(-0.3..0.3), 0.8], [0.0, 0.0, 1.0]);
        let warm = rng.gen_range(-0.08..0.08);
        Look {
            skin,
            lip,
            hair,
            brow,
            iris: pick(rng, &IRIS_COLOURS, 0.1),
            cloth: random_colour(rng),
            cloth2: random_colour(rng),
            stripes: if rng.gen_bool(0.3) {
                rng.gen_range(8.0..30.0)
            } else {
                0.0
            },
            has_hair: rng.gen_bool(0.92),
            hairline: rng.gen_range(-1.05..-0.62),
            hair_side: rng.gen_range(-0.4..-0.15),
            hair_back: rng.gen_range(0.2..1.4),
            hair_volume: rng.gen_range(0.02..0.22),
            blush: rng.gen_range(0.0..0.25),
            eyeshadow: if rng.gen_bool(0.2) {
                rng.gen_range(0.1..0.4)
            } else {
                0.0
            },
            stubble: if rng.gen_bool(0.2) {
                rng.gen_range(0.1..0.35)
            } else {
                0.0
            },
            light,
            fill,
            ambient: if hard {
                rng.gen_range(0.12..0.45)
            } else {
                rng.gen_range(0.25..0.5)
            },
            diffuse: rng.gen_range(0.5..0.85),
            fill_k: rng.gen_range(0.0..0.25),
            light_col: [1.0 + warm, 1.0, 1.0 - warm],
            seed: rng.r#gen(),
        }
    }
}

/// Head mesh resolution: section angles × heights.
const HEAD_NT: usize = 128;
const HEAD_NY: usize = 120;

fn grid_vertices(
    pos: &[V3],
    normals: &[V3],
    cam: &Camera,
    attr: impl Fn(usize) -> [f32; 3],
) -> Vec<Vertex> {
    pos.iter()
        .zip(normals)
        .enumerate()
        .map(|(i, (&p, &n))| {
            let nc = mat_vec(&cam.rot, n);
            let a = attr(i);
            Vertex {
                pos: cam.project(p),
                attr: [a[0], a[1], a[2], nc[0], nc[1], nc[2]],
            }
        })
        .collect()
}

fn build_mesh(model: &FaceModel, look: &Look, cam: &Camera, body_cam: &Camera) -> Mesh {
    let mut mesh = Mesh::default();
    // Head: sections sampled densely near the front, where the super-ellipse's x changes fastest.
    let ts: Vec<f32> = (0..HEAD_NT)
        .map(|i| {
            let u = -1.0 + 2.0 * i as f32 / HEAD_NT as f32;
            PI * u.signum() * u.abs().powf(1.35)
        })
        .collect();
    let (top, bottom) = (-model.p.skull_height, model.chin_y);
    let mut pos = Vec::with_capacity(HEAD_NT * HEAD_NY);
    let mut cos_t = Vec::with_capacity(HEAD_NT * HEAD_NY);
    for j in 0..HEAD_NY {
        let y = lerp(top, bottom, j as f32 / (HEAD_NY - 1) as f32);
        for &t in &ts {
            pos.push(model.surface(t, y));
            cos_t.push(t.cos());
        }
    }
    let normals = grid_normals(&pos, HEAD_NT, HEAD_NY, true, [0.0, -1.0, 0.0]);
    let verts = grid_vertices(&pos, &normals, cam, |i| [pos[i][0], pos[i][1], cos_t[i]]);
    mesh.add_grid(verts, HEAD_NT, HEAD_NY, true, Material::Head);
    if look.has_hair {
        add_hair(&mut mesh, model, look, cam);
    }

    // Ears: polar grids over their discs (u along `down`, v along `back`).
    const RINGS: usize = 6;
    const SEGS: usize = 24;
    for ear in &model.ears {
        let mut pos = Vec::with_capacity(RINGS * SEGS);
        let mut uv = Vec::with_capacity(RINGS * SEGS);
        for r in 0..RINGS {
            let rad = r as f32 / (RINGS - 1) as f32;
            for s in 0..SEGS {
                let a = 2.0 * PI * s as f32 / SEGS as f32;
                let (u, v) = (rad * a.cos(), rad * a.sin());
                pos.push(ear.point(u, v));
                uv.push([u, v]);
            }
        }
        let normals = vec![ear.normal; pos.len()];
        let verts = grid_vertices(&pos, &normals, cam, |i| [uv[i][0], uv[i][1], 0.0]);
        mesh.add_grid(verts, SEGS, RINGS, true, Material::Ear);
    }

    // Neck: an elliptic cylinder turning with the head.
    let nw = 0.5 * model.p.head_width / 0.88;
    let neck = |t: f32, y: f32| [nw * t.sin(), y, -0.2 + 0.45 * t.cos()];
    surface_grid(&mut mesh, cam, 24, 10, (0.3, 2.4), neck, Material::Neck);
    // Torso: shoulders widening below the neck, turning only partly with the head.
    let torso = |t: f32, y: f32| {
        let s = smoothstep(1.8, 2.5, y);
        let (hw, hd) = (0.5 + 1.4 * s, 0.45 + 0.2 * s);
        [
            hw * t.sin(),
            y + 0.15 * (1.0 - t.cos().abs()) * s,
            -0.25 + hd * t.cos(),
        ]
    };
    surface_grid(
        &mut mesh,
        body_cam,
        32,
        14,
        (1.8, 6.0),
        torso,
        Material::Torso,
    );
    mesh
}

/// Hair volume: the skull pushed out along its normal where there is hair (thickest on top,
/// none below the ears, so it never covers a landmark), sunk just under the skin elsewhere.
fn add_hair(mesh: &mut Mesh, model: &FaceModel, look: &Look, cam: &Camera) {
    const NT: usize = 96;
    const NY: usize = 64;
    let top = -model.p.skull_height;
    let bottom = look.hair_back.min(model.chin_y);
    let mut base = Vec::with_capacity(NT * NY);
    let mut attr = Vec::with_capacity(NT * NY);
    for j in 0..NY {
        let y = lerp(top, bottom, j as f32 / (NY - 1) as f32);
        for i in 0..NT {
            let u = -1.0 + 2.0 * i as f32 / NT as f32;
            let t = PI * u.signum() * u.abs().powf(1.35);
            let p = model.surface(t, y);
            base.push(p);
            attr.push([p[0], p[1], t.cos()]);
        }
    }
    let normals = grid_normals(&base, NT, NY, true, [0.0, -1.0, 0.0]);
    let mut amount = Vec::with_capacity(base.len());
    let pos: Vec<V3> = base
        .iter()
        .zip(&normals)
        .zip(&attr)
        .map(|((p, n), a)| {
            let line = hair_line(look, a[0], a[2]) + hair_fuzz(look, a[0], a[1]);
            let mask = smoothstep(line, line - 0.08, a[1]);
            let lumps = 0.75 + 0.5 * value_noise(a[0] * 4.0 + 7.0, a[1] * 4.0, look.seed ^ 0x99);
            let d = look.hair_volume * mask * lumps * (1.0 - smoothstep(-0.35, 0.05, a[1]))
                - 0.015 * (1.0 - mask);
            amount.push(mask);
            [p[0] + n[0] * d, p[1] + n[1] * d, p[2] + n[2] * d]
        })
        .collect();
    let normals = grid_normals(&pos, NT, NY, true, [0.0, -1.0, 0.0]);
    let verts = grid_vertices(&pos, &normals, cam, |i| attr[i]);
    mesh.add_grid_where(verts, NT, NY, true, Material::Hair, |i| amount[i] > 0.0);
}

/// Mesh a surface of revolution-like `f(t, y)` over t ∈ [−π, π) and `ys`.
fn surface_grid(
    mesh: &mut Mesh,
    cam: &Camera,
    nt: usize,
    ny: usize,
    ys: (f32, f32),
    f: impl Fn(f32, f32) -> V3,
    material: Material,
) {
    let mut pos = Vec::with_capacity(nt * ny);
    let mut ct = Vec::with_capacity(nt * ny);
    for j in 0..ny {
        let y = lerp(ys.0, ys.1, j as f32 / (ny - 1) as f32);
        for i in 0..nt {
            let t = -PI + 2.0 * PI * i as f32 / nt as f32;
            pos.push(f(t, y));
            ct.push(t.cos());
        }
    }
    let normals = grid_normals(&pos, nt, ny, true, [0.0, 0.0, 1.0]);
    let verts = grid_vertices(&pos, &normals, cam, |i| [pos[i][0], pos[i][1], ct[i]]);
    mesh.add_grid(verts, nt, ny, true, material);
}

fn mix(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [
        lerp(a[0], b[0], t),
        lerp(a[1], b[1], t),
        lerp(a[2], b[2], t),
    ]
}

fn scale3(a: [f32; 3], k: f32) -> [f32; 3] {
    a.map(|v| v * k)
}

/// Shade every covered pixel (deferred: each pixel once, whatever the overdraw).
fn shade(frame: &mut Frame, gbuf: &GBuffer, mesh: &Mesh, model: &FaceModel, look: &Look) {
    let half = normalize_or(
        [look.light[0], look.light[1], look.light[2] + 1.0],
        [0.0, 0.0, 1.0],
    );
    for i in 0..frame.px.len() {
        let Some((material, a)) = gbuf.attributes(mesh, i) else {
            continue;
        };
        let mut n = normalize_or([a[3], a[4], a[5]], [0.0, 0.0, 1.0]);
        let (albedo, spec_k) = match material {
            Material::Head => head_albedo(model, look, a[0], a[1], a[2]),
            Material::Hair => hair_albedo(look, a[0], a[1]),
            Material::Ear => {
                if n[2] < 0.0 {
                    n = n.map(|v| -v);
                }
                (ear_albedo(look, a[0], a[1]), 0.05)
            }
            Material::Neck => {
                let shadow = 0.45 + 0.55 * smoothstep(model.chin_y - 0.1, model.chin_y + 0.9, a[1]);
                (scale3(look.skin, 0.93 * shadow), 0.03)
            }
            Material::Torso => {
                let stripe = look.stripes > 0.0 && (a[1] * look.stripes).sin() > 0.3;
                let c = if stripe { look.cloth2 } else { look.cloth };
                (
                    scale3(
                        c,
                        0.85 + 0.15 * value_noise(a[0] * 30.0, a[1] * 30.0, look.seed),
                    ),
                    0.0,
                )
            }
        };
        let diffuse =
            look.diffuse * dot(n, look.light).max(0.0) + look.fill_k * dot(n, look.fill).max(0.0);
        let spec = spec_k * dot(n, half).max(0.0).powi(24);
        let lit = look.ambient + diffuse;
        frame.px[i] = [0, 1, 2].map(|c| (albedo[c] * lit + spec) * look.light_col[c]);
    }
}

fn ear_albedo(look: &Look, u: f32, v: f32) -> [f32; 3] {
    let r = (u * u + v * v).sqrt();
    let mut c = scale3(look.skin, 0.95);
    if r < 0.55 && v > -0.5 {
        c = scale3(c, 0.72 + 0.2 * (r / 0.55));
    } else if r > 0.82 {
        c = scale3(c, 1.05);
    }
    // Warmer, redder ear rim.
    mix(c, [c[0] * 1.05, c[1] * 0.85, c[2] * 0.85], 0.3)
}

/// Height of the hairline at frontal abscissa x on the side of the head given by `front` (the
/// cosine of the section angle): forehead, above the ears, nape.
fn hair_line(look: &Look, x: f32, front: f32) -> f32 {
    if front >= 0.05 {
        let temples = 0.14 * (x / 0.8).powi(2);
        lerp(
            look.hair_side,
            look.hairline + temples,
            smoothstep(0.05, 0.45, front),
        )
    } else {
        lerp(
            look.hair_back,
            look.hair_side,
            smoothstep(-0.5, 0.05, front),
        )
    }
}

fn hair_fuzz(look: &Look, x: f32, y: f32) -> f32 {
    0.04 * (value_noise(x * 30.0, y * 30.0, look.seed) - 0.5)
}

fn hair_albedo(look: &Look, x: f32, y: f32) -> ([f32; 3], f32) {
    let strands = value_noise(x * 70.0 + y * 4.0, y * 5.0, look.seed ^ 0x11);
    let clumps = value_noise(x * 9.0, y * 9.0, look.seed ^ 0x22);
    (
        scale3(look.hair, 0.6 + 0.5 * strands + 0.3 * (clumps - 0.5)),
        0.15,
    )
}

/// Albedo and specular strength of the head at frontal coordinates (x, y); `front` is the
/// cosine of the section angle (features exist only on the front).
fn head_albedo(model: &FaceModel, look: &Look, x: f32, y: f32, front: f32) -> ([f32; 3], f32) {
    let p = &model.p;
    if look.has_hair && y < hair_line(look, x, front) + hair_fuzz(look, x, y) {
        return hair_albedo(look, x, y);
    }
    let mut c = scale3(
        look.skin,
        0.93 + 0.1 * fbm2(x * 9.0, y * 9.0, look.seed ^ 0x33),
    );
    if front < 0.1 {
        return (c, 0.06);
    }
    let mut spec = 0.08;
    let ax = x.abs();
    // Cheeks, stubble.
    let cheek = gauss2(ax, y, [0.48, 0.42], 0.16, 0.14);
    c = mix(
        c,
        [c[0] * 1.05, c[1] * 0.82, c[2] * 0.82],
        look.blush * cheek,
    );
    if look.stubble > 0.0 && y > p.nose_base_y + 0.03 {
        let around_mouth =
            smoothstep(0.7, 0.4, ax) * smoothstep(p.nose_base_y, p.nose_base_y + 0.1, y);
        let dots = value_noise(x * 160.0, y * 160.0, look.seed ^ 0x44);
        c = mix(
            c,
            scale3(look.hair, 0.8),
            look.stubble * around_mouth * (0.5 + 0.5 * dots),
        );
    }

    for brow in &model.brows {
        if let Some((s, up, lo)) = brow.span_at(x) {
            let soft = 0.008;
            let alpha =
                ((y - up) / soft + 0.5).clamp(0.0, 1.0) * ((lo - y) / soft + 0.5).clamp(0.0, 1.0);
            if alpha > 0.0 {
                let hairs = value_noise(x * 120.0, y * 35.0, look.seed ^ 0x55);
                let density = 0.75 + 0.25 * hairs - 0.25 * s;
                c = mix(c, look.brow, (alpha * density).clamp(0.0, 1.0));
            }
        }
    }

    for eye in &model.eyes {
        let cx = 0.5 * (eye.inner[0] + eye.outer[0]);
        let cy = 0.5 * (eye.inner[1] + eye.outer[1]);
        if (x - cx).abs() > 0.5 * eye.width() + 0.06 || y < cy - 0.16 || y > cy + 0.1 {
            continue;
        }
        // Socket shadow and eyeshadow above the eye.
        let socket = gauss2(x, y, [cx, cy - 0.05], 0.7 * eye.width(), 0.06);
        c = scale3(c, 1.0 - 0.12 * socket);
        if look.eyeshadow > 0.0 {
            c = mix(
                c,
                [0.35, 0.25, 0.35],
                look.eyeshadow * gauss2(x, y, [cx, cy - 0.06], 0.6 * eye.width(), 0.04),
            );
        }
        let Some((s, up, lo)) = eye.span_at(x) else {
            continue;
        };
        let lid = (4.0 * s * (1.0 - s)).max(0.0);
        let lash = 0.010 + 0.008 * s;
        if y > up && y < lo {
            let dx = x - eye.iris[0];
            let dy = y - eye.iris[1];
            let r = (dx * dx + dy * dy).sqrt() / eye.iris_r;
            let mut e = if r < 1.0 {
                if r < 0.38 {
                    [0.02, 0.02, 0.02]
                } else {
                    let streaks = value_noise(dy.atan2(dx) * 12.0, r * 3.0, look.seed ^ 0x66);
                    let limbus = if r > 0.82 { 0.55 } else { 1.0 };
                    scale3(look.iris, (0.7 + 0.5 * streaks) * limbus)
                }
            } else {
                scale3([0.86, 0.83, 0.80], 0.72 + 0.28 * lid.sqrt())
            };
            let hl = gauss2(
                x,
                y,
                [
                    eye.iris[0] - 0.3 * eye.iris_r,
                    eye.iris[1] - 0.3 * eye.iris_r,
                ],
                0.12 * eye.iris_r,
                0.12 * eye.iris_r,
            );
            e = mix(e, [1.0, 1.0, 1.0], 0.9 * hl);
            // The upper lid shades the top of the eyeball.
            let shade = 0.6 + 0.4 * smoothstep(up, up + 0.5 * (lo - up), y);
            return (scale3(e, shade), 0.35);
        }
        if y <= up && y > up - lash {
            c = mix(c, [0.05, 0.04, 0.04], 0.92);
            spec = 0.02;
        } else if y >= lo && y < lo + 0.007 {
            c = scale3(c, 0.78);
        } else {
            let crease = up - 0.03 - 0.02 * lid;
            if (y - crease).abs() < 0.006 {
                c = scale3(c, 0.84);
            }
        }
    }

    let nose = &model.nose;
    if ax < nose.half_width + 0.12 && y > nose.tip_y - 0.2 && y < nose.base_y + 0.05 {
        for side in [-1.0, 1.0] {
            let nc = nose.nostril(side);
            let rr = nose.nostril_radii();
            let d = ((x - nc[0]) / rr[0]).powi(2) + ((y - nc[1]) / rr[1]).powi(2);
            if d < 1.3 {
                c = mix(c, [0.16, 0.07, 0.06], smoothstep(1.3, 0.8, d));
            }
            let (ac, ar) = nose.ala(side);
            let dist = ((x - ac[0]).powi(2) + (y - ac[1]).powi(2)).sqrt();
            let outer = side * (x - ac[0]) > -0.2 * ar && y < ac[1] + 0.8 * ar;
            if outer && (dist - ar).abs() < 0.007 {
                c = scale3(c, 0.8);
            }
        }
        let below = y - nose.base_at(x);
        if ax < nose.half_width + 0.01 && (-0.012..0.02).contains(&below) {
            c = scale3(c, 0.72 + 0.28 * (below + 0.012) / 0.032);
        }
    }

    let lips = &model.lips;
    let (lx0, lx1) = lips.x_span();
    if x > lx0 - 0.01 && x < lx1 + 0.01 {
        let ou = lips.outer_upper.at(x);
        let ol = lips.outer_lower.at(x);
        if y > ou - 0.01 && y < ol + 0.01 {
            let iu = lips.inner_upper.at(x);
            let il = lips.inner_lower.at(x);
            let soft = 0.006;
            let inside_outer =
                ((y - ou) / soft + 0.5).clamp(0.0, 1.0) * ((ol - y) / soft + 0.5).clamp(0.0, 1.0);
            let corner = ((x - lx0) / 0.01).clamp(0.0, 1.0) * ((lx1 - x) / 0.01).clamp(0.0, 1.0);
            let mut lipc = if y < iu {
                scale3(look.lip, 0.85)
            } else if y >= il {
                spec = 0.25;
                scale3(
                    look.lip,
                    1.0 + 0.15 * gauss2(x, y, [0.0, il + 0.35 * (ol - il)], 0.15, 0.02),
                )
            } else {
                let teeth = y < iu + 0.05 && ax < 0.7 * (lx1 - lx0) * 0.5;
                if teeth {
                    [0.85, 0.82, 0.74]
                } else {
                    [0.22, 0.05, 0.05]
                }
            };
            // The line where the lips meet, dark even when the mouth is closed.
            let seam = (y - iu).abs().min((y - il).abs());
            if seam < 0.007 {
                lipc = scale3(lipc, 0.45 + 0.55 * seam / 0.007);
            }
            c = mix(c, lipc, inside_outer * corner);
        }
    }
    (c, spec)
}

/// Gradient, smooth blotches, random shapes, and sometimes defocus.
fn paint_background(frame: &mut Frame, look: &Look, face_scale: f32, rng: &mut ChaCha8Rng) {
    let (w, h) = (frame.width as f32, frame.height as f32);
    let c0 = random_colour(rng);
    let c1 = random_colour(rng);
    let angle = rng.gen_range(0.0..2.0 * PI);
    let (ds, dc) = angle.sin_cos();
    let diag = (w * w + h * h).sqrt();
    let cell = w.min(h) / rng.gen_range(2.0..8.0);
    let blotch = rng.gen_range(0.1..0.5);
    let seed = look.seed ^ 0x77;
    for y in 0..frame.height {
        for x in 0..frame.width {
            let (fx, fy) = (x as f32, y as f32);
            let t = ((fx - 0.5 * w) * dc + (fy - 0.5 * h) * ds) / diag + 0.5;
            let n = value_noise(fx / cell, fy / cell, seed);
            frame.px[y * frame.width + x] = scale3(mix(c0, c1, t), 1.0 - blotch * 0.5 + blotch * n);
        }
    }
    let min_side = w.min(h);
    for _ in 0..rng.gen_range(3..12) {
        let centre = [rng.gen_range(0.0..w), rng.gen_range(0.0..h)];
        let size = min_side * rng.gen_range(0.04..0.3);
        let col = random_colour(rng);
        let col2 = random_colour(rng);
        let stripes = if rng.gen_bool(0.3) {
            rng.gen_range(0.05..0.4)
        } else {
            0.0
        };
        let paint = move |lx: f32, _ly: f32| {
            if stripes > 0.0 && (lx * stripes).sin() > 0.0 {
                col2
            } else {
                col
            }
        };
        let alpha = rng.gen_range(0.5..1.0);
        let rot = rng.gen_range(0.0..PI);
        match rng.gen_range(0..3) {
            0 => frame.ellipse(
                centre,
                [size, size * rng.gen_range(0.3..1.0)],
                rot,
                alpha,
                paint,
            ),
            1 => frame.rect(
                centre,
                [size, size * rng.gen_range(0.3..1.0)],
                rot,
                alpha,
                paint,
            ),
            _ => frame.rect(
                centre,
                [size * 2.0, rng.gen_range(1.0..0.05 * min_side + 2.0)],
                rot,
                alpha,
                paint,
            ),
        }
    }
    if rng.gen_bool(0.5) {
        let r = (face_scale * rng.gen_range(0.005..0.03)).round() as usize;
        frame.box_blur(r);
        frame.box_blur(r);
    }
}

/// Bars and blobs over the face, sometimes skin-coloured (hands).
fn paint_occluders(
    frame: &mut Frame,
    face_box: &[i32; 3],
    look: &Look,
    hard: bool,
    rng: &mut ChaCha8Rng,
) {
    let side = face_box[2] as f32;
    let count = if hard { rng.gen_range(1..=3) } else { 1 };
    for _ in 0..count {
        let centre: V2 = [
            face_box[0] as f32 + side * rng.gen_range(0.15..0.85),
            face_box[1] as f32 + side * rng.gen_range(0.15..0.85),
        ];
        let col = if rng.gen_bool(0.25) {
            jitter3(rng, look.skin, 0.1)
        } else {
            random_colour(rng)
        };
        let col2 = scale3(col, rng.gen_range(0.5..0.9));
        let angle = rng.gen_range(0.0..PI);
        let light = rng.gen_range(-0.5..0.5);
        // Shaded across its width so that it reads as a solid object.
        let paint = move |_lx: f32, ly: f32| scale3(col, 1.0 + light * (ly * 0.05).tanh());
        let grain = move |lx: f32, ly: f32| {
            if ((lx + ly) * 0.3).sin() > 0.6 {
                col2
            } else {
                col
            }
        };
        if rng.gen_bool(0.5) {
            let half = [
                side * rng.gen_range(0.3..0.9),
                side * rng.gen_range(0.05..0.14),
            ];
            frame.rect(centre, half, angle, 1.0, paint);
        } else {
            let r = side * rng.gen_range(0.08..0.25);
            frame.ellipse(centre, [r, r * rng.gen_range(0.5..1.0)], angle, 1.0, grain);
        }
    }
}

/// Global colour, exposure, grey conversion and lens blur. Returns whether the image is grey.
fn finish(frame: &mut Frame, cam: &Camera, hard: bool, rng: &mut ChaCha8Rng) -> bool {
    let gain = if hard {
        rng.gen_range(0.45..1.35)
    } else {
        rng.gen_range(0.75..1.2)
    };
    let contrast = rng.gen_range(0.8..1.2);
    let cast = [0, 1, 2].map(|_| 1.0 + rng.gen_range(-0.07..0.07));
    let grey = rng.gen_bool(0.04);
    for p in &mut frame.px {
        let mut v = [0, 1, 2].map(|c| ((p[c] * gain - 0.5) * contrast + 0.5) * cast[c]);
        if grey {
            let l = 0.299 * v[0] + 0.587 * v[1] + 0.114 * v[2];
            v = [l; 3];
        }
        *p = v;
    }
    frame.soften();
    // Defocus and motion blur scale with the face's size in pixels.
    let blur_p = if hard { 0.6 } else { 0.25 };
    if rng.gen_bool(blur_p) {
        let r = (cam.scale * rng.gen_range(0.005..0.02)).round() as usize;
        frame.box_blur(r.min(6));
    }
    grey
}
