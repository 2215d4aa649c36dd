<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.28.0-Firenze" styleCategories="Symbology">
  <pipe>
    <rasterrenderer type="singlebandpseudocolor" band="1" opacity="1" alphaBand="-1" classificationMin="0" classificationMax="254" nodataColor="">
      <rasterTransparency />
      <minMaxOrigin>
        <limits>None</limits>
        <extent>WholeRaster</extent>
        <statAccuracy>Estimated</statAccuracy>
        <cumulativeCutLower>0.02</cumulativeCutLower>
        <cumulativeCutUpper>0.98</cumulativeCutUpper>
        <stdDevFactor>2</stdDevFactor>
      </minMaxOrigin>
      <rastershader>
        <colorrampshader colorRampType="INTERPOLATED" classificationMode="1" clip="0" minimumValue="0" maximumValue="254" labelPrecision="2">
          <colorramp type="gradient" name="[source]">
            <Option type="Map">
              <Option name="color1" type="QString" value="255,255,178,255" />
              <Option name="color2" type="QString" value="189,0,38,255" />
              <Option name="discrete" type="QString" value="0" />
              <Option name="rampType" type="QString" value="gradient" />
              <Option name="stops" type="QString" value="0.5;253,141,60,255" />
            </Option>
            <prop k="color1" v="255,255,178,255" />
            <prop k="color2" v="189,0,38,255" />
            <prop k="discrete" v="0" />
            <prop k="rampType" v="gradient" />
            <prop k="stops" v="0.5;253,141,60,255" />
          </colorramp>
          <item value="0" label="0.00" color="#ffffb2" alpha="0" />
          <item value="127" label="0.50" color="#fd8d3c" alpha="200" />
          <item value="254" label="1.00" color="#bd0026" alpha="255" />
        </colorrampshader>
      </rastershader>
    </rasterrenderer>
    <brightnesscontrast brightness="0" contrast="0" gamma="1" />
    <huesaturation saturation="0" grayscaleMode="0" colorizeOn="0" colorizeRed="255" colorizeGreen="128" colorizeBlue="128" colorizeStrength="100" invertColors="0" />
    <rasterresampler maxOversampling="2" />
  </pipe>
  <blendMode>0</blendMode>
</qgis>
